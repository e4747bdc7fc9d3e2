"""The `numerics` section: the process-wide numeric settings every stage is pinned to (tasks/numerics/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config.base import _Model
from tasks.config.ranges import Threads


class NumericsConfig(_Model):
    """CPU float results can depend on these, so they are part of what a stage is computed under:
    each stage process starts with them, `flywheel init` freezes 'auto' to this machine's cores, and
    `flywheel reproduce` applies the recorded values, whatever machine it runs on."""

    threads: Threads | Literal["auto"] = Field(
        "auto", description="intra-op threads (torch, OpenMP, MKL); 'auto': this machine's cores, frozen at init")
    interop_threads: Threads | Literal["auto"] = Field("auto", description="torch inter-op threads; 'auto' as above")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms (errors where an op has "
                                                   "no deterministic kernel)")
    flush_denormal: bool = Field(False, description="flush denormal floats to zero")
    matmul_precision: Literal["highest", "high", "medium"] = Field(
        "highest", description="torch float32 matmul precision; below 'highest' may use reduced-precision kernels")
    cpu_path: Literal["portable", "native"] | None = Field(
        None, description="CPU kernels every stage computes with. 'portable': MKL's AVX2 CNR branch (strict), "
                          "MKL_DYNAMIC=FALSE, ATen's avx2 kernels and oneDNN capped at AVX2, so the bits do not "
                          "depend on the processor model, memory alignment or load, and any x86-64 machine with "
                          "AVX2 reproduces them; 'native': the libraries pick kernels by processor (faster on "
                          "some CPUs; bits reproduce only on the same kind of machine). Unset: 'portable' for a "
                          "new workspace (frozen at init); a workspace recorded before this setting ran 'native'")
    gpu_deterministic: bool = Field(
        False, description="GPU runs: deterministic torch algorithms (cuDNN too), a fixed cuBLAS workspace "
                           "(CUBLAS_WORKSPACE_CONFIG), the Trainer's full determinism and vLLM's batch-invariant "
                           "mode, so a GPU iteration repeats bit for bit on the same GPU and software; costs "
                           "speed (bench/gpu_check measures it). No effect on CPU bits")
    isolate_stages: bool = Field(
        True, description="run each stage of `flywheel run` in its own process, as `dvc repro` does, so no "
                          "stage sees what an earlier one left in the process")
