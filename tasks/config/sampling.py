"""The hint pass: a second, targeted sampling pass inside `generate` for the prompts the first pass
left unsolved (STaR rationalization, GSI-style partial solutions, a Socratic template).
Off by default; off writes exactly the tables a recipe without this section writes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.config.base import _Model
from tasks.config.ranges import Share


def _needs(template: str, *placeholders: str) -> str:
    missing = [p for p in placeholders if p not in template]
    if missing:
        raise ValueError(f"the template lacks {' and '.join(missing)}")
    return template


class AnswerHint(_Model):
    """STaR rationalization: the gold answer in the user turn (prompts with a gold answer only)."""

    template: str = Field("{question} (The answer is {answer}.)",
                          description="the hinted user turn; {question} and {answer} are replaced (plain "
                                      "replacement, so braces in a problem are safe)")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        return _needs(v, "{question}", "{answer}")


class PartialHint(_Model):
    """GSI-style partial solution ("state reset"): the first steps of the solution are given."""

    source: Literal["arith", "target"] = Field(
        "arith", description="arith: the first steps recomputed from the problem text (the arith generator's "
                             "grammar; tasks/data/arith.py); target: the first sentences of the prompt's "
                             "reference solution, where prompts.parquet keeps one")
    share: Share = Field(0.5, gt=0, lt=1, description="share of the steps revealed, rounded up; at least one, "
                                                      "never all (a one-step problem gets no partial hint)")
    placement: Literal["prefill", "prompt"] = Field(
        "prefill", description="prefill: the steps start the assistant turn and the sample's text is those steps "
                               "plus the model's continuation; prompt: they go into the user turn by `template`")
    template: str = Field("{question} Start:{partial}",
                          description="the hinted user turn with placement prompt; {question} and {partial} are "
                                      "replaced")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        return _needs(v, "{question}", "{partial}")


class SocraticHint(_Model):
    """A sub-question the recipe writes, appended to the problem (every prompt can take it)."""

    template: str | None = Field(None, description="the hinted user turn, e.g. '{question} What is the number "
                                                   "after the first step?'; needed when kinds has socratic")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        return v if v is None else _needs(v, "{question}")


HintKind = Literal["answer", "partial", "socratic"]


class HintsConfig(_Model):
    """Prompts with fewer than `min_correct` correct first-pass samples are sampled again with a hint. The
    hinted samples are verified and scored like the others, marked by origin (rationalized: the answer
    hint; hinted: partial or socratic), and trained without the hint in the user turn, as STaR does."""

    enabled: bool = Field(False, description="run the hint pass; off: generate writes the first pass alone")
    min_correct: int = Field(1, ge=1, description="m: prompts with fewer correct first-pass samples get a hint")
    k: int = Field(4, ge=1, description="samples per hinted prompt")
    kinds: list[HintKind] = Field(["partial", "answer"],
                                  description="hint kinds in order of preference; each prompt gets the first its "
                                              "data allows (answer needs a gold answer, partial a solvable "
                                              "problem of two or more steps)")
    max_prompts: int | None = Field(None, ge=1, description="most prompts hinted per iteration: the fewest "
                                                            "correct first, then by prompt_id; None: all")
    reserve: Share = Field(0.0, lt=1, description="with adaptive K (allocation.enabled): the share of "
                                                        "allocation.budget kept for this pass, k per prompt until "
                                                        "it is spent; 0, or allocation off: the pass adds its "
                                                        "samples to the first pass's")
    answer: AnswerHint = AnswerHint()
    partial: PartialHint = PartialHint()
    socratic: SocraticHint = SocraticHint()

    @field_validator("kinds")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one hint kind")
        if len(set(v)) != len(v):
            raise ValueError("lists a hint kind twice")
        return v

    @model_validator(mode="after")
    def _socratic_template(self) -> HintsConfig:
        if "socratic" in self.kinds and self.socratic.template is None:
            raise ValueError("kinds has socratic, which needs socratic.template")
        return self
