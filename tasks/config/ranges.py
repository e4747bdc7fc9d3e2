"""The range of every kind of number a recipe holds, in one place.

Sections that hold the same kind of value (a learning rate, a step count, a temperature, a score
threshold, a share) use the same type from here, so a limit checked in one section is checked in its
twin too (`warmup` and `train` once differed). Every float is finite: NaN and infinities are refused
wherever a number is meant. A field may tighten its type further (`Share = Field(..., lt=1)`); it may
never loosen it. tests/unit/config/test_recipe_ranges.py checks that no numeric field of the recipe is
left without bounds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# the most a score can reach: correct (0/1) + reward.weight (at most MAX_WEIGHT) * reward (in [-1, 1]),
# or the judge's 1-5
MAX_WEIGHT = 100.0
MAX_SCORE = 1000.0

LearningRate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False,
                                      description="optimizer learning rate, in (0, 1]")]
StepCount = Annotated[int, Field(ge=1, le=10_000_000, description="optimizer steps, at least 1")]
Count = Annotated[int, Field(ge=0, le=1_000_000_000, description="a number of items, 0 or more")]
PositiveCount = Annotated[int, Field(ge=1, le=1_000_000_000, description="a number of items, at least 1")]
Temperature = Annotated[float, Field(ge=0, le=10, allow_inf_nan=False,
                                     description="sampling temperature in [0, 10]; 0 is greedy")]
SamplingTemperature = Annotated[float, Field(gt=0, le=10, allow_inf_nan=False,
                                             description="sampling temperature in (0, 10]; greedy is not "
                                                         "sampling")]
Threshold = Annotated[float, Field(ge=-MAX_SCORE, le=MAX_SCORE, allow_inf_nan=False,
                                   description="a score threshold; scores lie in [-reward.weight, 1 + "
                                               "reward.weight], or 1-5 for the judge")]
Score = Annotated[float, Field(ge=-MAX_SCORE, le=MAX_SCORE, allow_inf_nan=False,
                               description="a score on the same scale as a threshold")]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False,
                               description="a share or probability in [0, 1]")]
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False,
                                description=f"a non-negative weight or coefficient, at most {MAX_WEIGHT:g}")]
Seconds = Annotated[float, Field(gt=0, le=30 * 24 * 3600, allow_inf_nan=False,
                                 description="a duration in seconds, above 0 and at most 30 days")]
Gigabytes = Annotated[float, Field(gt=0, le=1 << 20, allow_inf_nan=False, description="a size in GB, above 0")]
PseudoCount = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False,
                                     description="a prior's weight in pseudo-samples, 0 or more")]
Difficulty = Annotated[int, Field(ge=0, le=2**31 - 1, description="a prompt difficulty (Int32, 0 or more)")]
Threads = Annotated[int, Field(ge=1, le=4096, description="a thread count, at least 1")]
