"""The `numerics` section: the process-wide numeric settings every stage is pinned to (tasks/numerics.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config.base import _Model


class NumericsConfig(_Model):
    """CPU float results can depend on these, so they are part of what a stage is computed under:
    each stage process starts with them, `flywheel init` freezes 'auto' to this machine's cores, and
    `flywheel reproduce` applies the recorded values, whatever machine it runs on."""

    threads: int | Literal["auto"] = Field(
        "auto", description="intra-op threads (torch, OpenMP, MKL); 'auto': this machine's cores, frozen at init")
    interop_threads: int | Literal["auto"] = Field("auto", description="torch inter-op threads; 'auto' as above")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms (errors where an op has "
                                                   "no deterministic kernel)")
    flush_denormal: bool = Field(False, description="flush denormal floats to zero")
    matmul_precision: Literal["highest", "high", "medium"] = Field(
        "highest", description="torch float32 matmul precision; below 'highest' may use reduced-precision kernels")
    isolate_stages: bool = Field(
        True, description="run each stage of `flywheel run` in its own process, as `dvc repro` does, so no "
                          "stage sees what an earlier one left in the process")
