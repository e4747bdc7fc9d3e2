"""Adaptive K: how one iteration's fixed sample budget is shared among its pool prompts."""

from __future__ import annotations

from pydantic import Field

from tasks.config.base import _Model
from tasks.config.ranges import PseudoCount, Share

# Hint-pass rows start their sample_idx here (tasks/sampling/hints.py), so first-pass indices stay below it.
HINT_IDX_BASE = 1000


class AllocationConfig(_Model):
    """Prompts that were hard in the previous iteration get more samples, solved ones fewer, within a
    fixed budget (tasks/sampling/allocation.py). Off: every prompt gets generate.k, as without this section."""

    enabled: bool = Field(False, description="share the budget by the previous iteration's evidence; off: "
                                             "generate.k samples per prompt")
    budget: int | None = Field(None, ge=1, description="samples per iteration, hint pass included; None: pool "
                                                       "prompts x generate.k (the uniform run's budget)")
    k_min: int = Field(2, ge=1, description="fewest samples a pool prompt gets")
    k_max: int = Field(32, ge=1, lt=HINT_IDX_BASE, description="most samples a pool prompt gets")
    prior_strength: PseudoCount = Field(4.0, description="pseudo-samples of the per-difficulty prior in p_hat "
                                                         "(0: the prompt's own rate alone)")
    p_floor: Share = Field(0.01, gt=0, lt=0.5, description="p_hat is clipped to [p_floor, 1 - p_floor], so a "
                                                           "prompt never solved still earns some samples")

