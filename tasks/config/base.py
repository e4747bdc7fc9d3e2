"""The base of every config model: unknown keys are refused, and a loaded recipe is immutable."""

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
