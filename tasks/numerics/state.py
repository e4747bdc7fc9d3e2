"""The process-wide numeric state a stage computes under: pinned at its start, recorded, re-applied.

CPU float results can depend on settings that live in the process, not in a stage's inputs: the
intra-op and inter-op thread counts, deterministic-algorithm mode, denormal flushing and float32
matmul precision. Libraries change some of them as a side effect (vLLM's CPU worker replaces
`torch.set_num_threads` with a no-op once it has bound its threads), so a stage pins all of them
itself, through torch's own C entry points, before it computes anything.
"""

from __future__ import annotations

import os
from typing import Any

from tasks.config.recipe import NumericsConfig
from tasks.errors import ConfigError
from tasks.numerics import portable

# Read before torch initialises its thread pools; set for every stage process.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's total."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve(cfg: NumericsConfig) -> NumericsConfig:
    """'auto' thread counts become this machine's core count and an unset CPU path the portable one
    (both frozen into the workspace at init)."""
    cores = available_cores()
    return cfg.model_copy(update={"threads": cores if cfg.threads == "auto" else cfg.threads,
                                  "interop_threads": (cfg.interop_threads if cfg.interop_threads != "auto"
                                                      else cores),
                                  "cpu_path": cfg.cpu_path or portable.PORTABLE})


def cpu_path(cfg: NumericsConfig) -> str:
    """The path a stage computes on: unset only in workspaces recorded before the setting, which ran natively."""
    return cfg.cpu_path or portable.NATIVE


def stage_env(cfg: NumericsConfig) -> dict[str, str | None]:
    """Environment for a stage process (None: remove the variable), so its thread pools start at the
    pinned size and its libraries on the pinned kernels (tasks/numerics/portable.py). OpenMP threads
    sleep instead of spinning while they wait: on a busy machine spinning threads wait for peers that
    are not scheduled, which made training several times slower; the bits are the same either way."""
    path = cpu_path(cfg)
    cfg = resolve(cfg)
    return {**{name: str(cfg.threads) for name in THREAD_ENV},
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            **portable.cpu_path_env(path), **portable.gpu_env(cfg.gpu_deterministic)}


def process_env(cfg: NumericsConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the stage environment applied."""
    return portable.apply(stage_env(cfg), dict(os.environ if base is None else base))


def pin(cfg: NumericsConfig) -> dict[str, Any]:
    """Apply every setting (whatever ran before in this process) and return the state now in force."""
    import torch

    check_path(cfg)
    cfg = resolve(cfg)
    torch._C.set_num_threads(int(cfg.threads))  # the C entry point: a library may have replaced torch.set_num_threads
    try:
        torch.set_num_interop_threads(int(cfg.interop_threads))
    except RuntimeError:  # settable once per process, before any inter-op work; `current()` records the truth
        pass
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=False)
    torch.set_flush_denormal(cfg.flush_denormal)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    if cfg.gpu_deterministic and torch.cuda.is_available():
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return current()


def native_capability(flags: list[str]) -> str:
    """ATen's own choice on a CPU with these flags (its AVX512 kernels need F, BW, VL and DQ)."""
    if all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        return "AVX512"
    return "AVX2" if all(f in flags for f in ("avx2", "fma")) else "DEFAULT"


def enter_path(cfg: NumericsConfig) -> None:
    """Put this process on the workspace's CPU path while that is still possible (torch not loaded):
    `flywheel stage` under `dvc repro` then computes a native workspace natively, whatever `flywheel`
    set at import. Once torch is loaded, `check_path` refuses a mismatch instead."""
    import sys

    if cfg.cpu_path is not None and "torch" not in sys.modules:
        portable.apply(portable.cpu_path_env(cfg.cpu_path))


def check_path(cfg: NumericsConfig) -> None:
    """A stage run in an already-started process computes on whatever kernels that process loaded torch
    with; refuse to compute a workspace's portable stage on native kernels, or the other way round."""
    if cfg.cpu_path is None:  # recorded before the setting: the process's own kernels, as then
        return
    loaded = portable.path_of_loaded_torch()
    if loaded is not None and loaded != cfg.cpu_path:
        raise ConfigError(f"this process computes on the {loaded} CPU path, the workspace on {cfg.cpu_path}.",
                          file="recipe", field="numerics.cpu_path",
                          fix="set numerics.isolate_stages: true (each stage starts with its own path), or "
                              f"start the command with FLYWHEEL_CPU_PATH={cfg.cpu_path}.")


def current() -> dict[str, Any]:
    """The numeric state in force in this process, for the run record and for reproduction checks."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def record(cfg: NumericsConfig) -> dict[str, Any]:
    """What a run record keeps: the pinned settings, the CPU path, and the machine fingerprint
    (tasks/numerics/fingerprint.py) that the bits also depend on."""
    import torch

    from tasks.numerics.fingerprint import fingerprint

    path = cpu_path(cfg)
    machine = fingerprint()
    # what the stage processes ran, whatever kernels this (flow) process loaded
    if path == portable.PORTABLE:
        machine["libraries"] = {**machine["libraries"], "aten_capability": portable.PORTABLE_CAPABILITY,
                                "mkl_cbwr": portable.CPU_PATH_ENV["MKL_CBWR"],
                                "onednn_max_isa": portable.CPU_PATH_ENV["ONEDNN_MAX_CPU_ISA"]}
    elif portable.path_in_force() == portable.PORTABLE:
        machine["libraries"] = {**machine["libraries"], "aten_capability": native_capability(machine["cpu"]["flags"]),
                                "mkl_cbwr": "auto", "onednn_max_isa": "auto"}
    return {**resolve(cfg).model_dump(exclude={"isolate_stages"}), "cpu_path": path, "cores": available_cores(),
            "cpu_capability": machine["libraries"]["aten_capability"],
            "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
            "machine": machine}
