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

# Read before torch initialises its thread pools; set for every stage process.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's total."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve(cfg: NumericsConfig) -> NumericsConfig:
    """'auto' thread counts become this machine's core count (frozen into the workspace at init)."""
    cores = available_cores()
    return cfg.model_copy(update={"threads": cores if cfg.threads == "auto" else cfg.threads,
                                  "interop_threads": (cfg.interop_threads if cfg.interop_threads != "auto"
                                                      else cores)})


def stage_env(cfg: NumericsConfig) -> dict[str, str]:
    """Environment for a stage process, so its thread pools start at the pinned size. OpenMP threads
    sleep instead of spinning while they wait: on a busy machine spinning threads wait for peers that
    are not scheduled, which made training several times slower; the bits are the same either way."""
    cfg = resolve(cfg)
    return {**{name: str(cfg.threads) for name in THREAD_ENV},
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def pin(cfg: NumericsConfig) -> dict[str, Any]:
    """Apply every setting (whatever ran before in this process) and return the state now in force."""
    import torch

    cfg = resolve(cfg)
    torch._C.set_num_threads(int(cfg.threads))  # the C entry point: a library may have replaced torch.set_num_threads
    try:
        torch.set_num_interop_threads(int(cfg.interop_threads))
    except RuntimeError:  # settable once per process, before any inter-op work; `current()` records the truth
        pass
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=False)
    torch.set_flush_denormal(cfg.flush_denormal)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    return current()


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
    """What a run record keeps: the pinned settings and the machine facts that bits also depend on."""
    import torch

    return {**resolve(cfg).model_dump(exclude={"isolate_stages"}), "cores": available_cores(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)}


def differences(recorded: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """Why this machine cannot give the recorded bits: settings a stage cannot pin to the recorded value."""
    out = []
    for key in ("cpu_capability", "mkldnn"):
        if key in recorded and recorded[key] != here.get(key):
            out.append(f"{key} is {here.get(key)!r} here, {recorded[key]!r} in the recorded run")
    return out
