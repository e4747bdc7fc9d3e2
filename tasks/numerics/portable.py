"""The environment that makes a process's CPU float results independent of the machine and the moment.

MKL, ATen and oneDNN pick their kernels at run time by processor model, and MKL without its
Conditional Numerical Reproducibility (CNR) mode may also split work by memory alignment and load.
The same training step then gives other bits on another CPU family, or in another process of the
same machine whose allocations happened to land elsewhere. The portable path pins all three to the
AVX2 kernels, which every x86-64 server of the last ten years runs:

- MKL: `MKL_CBWR=AVX2,STRICT` (the AVX2 branch; STRICT also fixes the reduction order whatever the
  alignment and thread count) and `MKL_DYNAMIC=FALSE` (it never picks its own thread count);
- ATen: `ATEN_CPU_CAPABILITY=avx2` (its vectorised kernels: reductions, softmax, activations, RNG);
- oneDNN: `ONEDNN_MAX_CPU_ISA=AVX2` (convolutions, bf16 matmuls, vLLM-CPU's linear layers).

They are read once, when each library initialises, so they must be in a process's environment before
torch is imported: stage processes start with them, and `flywheel` puts them into its own environment
before it loads torch. Standard library only: bench scripts use this on machines without flywheel's
other dependencies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PORTABLE = "portable"
NATIVE = "native"
# Variables this module owns: under `native` they are removed from a stage's environment, so a
# workspace's mode, not the caller's shell, decides the kernels.
CPU_PATH_ENV: dict[str, str] = {
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_DYNAMIC": "FALSE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN's older name, read by the builds vendored in some wheels
}
# What torch reports once the portable environment took effect (`torch.backends.cpu.get_cpu_capability()`).
PORTABLE_CAPABILITY = "AVX2"

# GPU runs: settings that make kernels repeatable (numerics.gpu_deterministic). cuBLAS needs a fixed
# workspace to give the same bits; vLLM's batch-invariant mode makes a request's logits independent
# of what else is in its batch. torch's own flags are set by `state.pin`.
GPU_DETERMINISTIC_ENV: dict[str, str] = {
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    "VLLM_BATCH_INVARIANT": "1",
}


def cpu_path_env(path: str) -> dict[str, str | None]:
    """Variables to set (str) or remove (None) for a process that must compute on `path`."""
    if path == PORTABLE:
        return dict(CPU_PATH_ENV)
    if path == NATIVE:
        return {name: None for name in CPU_PATH_ENV}
    raise ValueError(f"unknown CPU path {path!r}; expected {PORTABLE!r} or {NATIVE!r}")


def gpu_env(deterministic: bool) -> dict[str, str | None]:
    return dict(GPU_DETERMINISTIC_ENV) if deterministic else {name: None for name in GPU_DETERMINISTIC_ENV}


def apply(env: Mapping[str, str | None], target: dict | os._Environ = os.environ) -> dict:
    """Set or remove each variable in `target` (default: this process's environment); returns it."""
    for name, value in env.items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return target


def path_in_force(environ: Mapping[str, str] = os.environ) -> str:
    """`portable` when every portable variable holds its value in `environ`, else `native`."""
    return PORTABLE if all(environ.get(k) == v for k, v in CPU_PATH_ENV.items()) else NATIVE


def path_of_loaded_torch() -> str | None:
    """The path this process's torch actually computes on, or None where torch is not loaded yet.
    ATen's capability is fixed at import: setting the variables later changes nothing."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    return PORTABLE if capability == PORTABLE_CAPABILITY and path_in_force() == PORTABLE else NATIVE
