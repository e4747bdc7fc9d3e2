"""What a stage's bits depend on besides its inputs: the machine, the math libraries and their branch.

The run record keeps this fingerprint; `flywheel reproduce` compares it with the machine it runs on
before any compute and says in one line whether the bits can match, and why not. Standard library
plus torch (imported inside), so bench scripts can print it on any machine.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

from tasks.numerics.portable import NATIVE, PORTABLE

# The CPU flags MKL, ATen and oneDNN dispatch on (as /proc/cpuinfo names them).
DISPATCH_FLAGS = ("sse4_2", "avx", "fma", "f16c", "avx2", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                  "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")
PORTABLE_NEEDS = ("avx2", "fma")  # what the portable path's kernels execute


def cpu() -> dict[str, Any]:
    """Vendor, model and dispatch flags of this CPU (Linux /proc/cpuinfo; the platform's name elsewhere)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key and key not in info:
                info[key] = value.strip()
            if key == "flags" or key == "Features":  # the first processor's block is enough
                break
    except OSError:
        pass
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {"arch": platform.machine(), "vendor": info.get("vendor_id", platform.processor() or "unknown"),
            "model": info.get("model name", "unknown"),
            "family_model_stepping": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
            "flags": sorted(f for f in DISPATCH_FLAGS if f in flags)}


def libraries() -> dict[str, Any]:
    """torch and the BLAS/oneDNN builds it carries, and the branches this process runs them on."""
    import torch

    shown = torch.__config__.show()

    def find(pattern: str) -> str | None:
        m = re.search(pattern, shown)
        return m.group(1).strip() if m else None

    return {"torch": torch.__version__,
            "blas": find(r"BLAS_INFO=(\w+)"),
            "mkl": find(r"Math Kernel Library Version ([^\n]+?) for"),
            "onednn": find(r"MKL-DNN (v[\d.]+)"),
            "openmp": find(r"OpenMP (\d+)"),
            "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR", "auto"),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "auto")}


def gpu() -> dict[str, Any] | None:
    """GPU model, driver, CUDA, cuDNN and NCCL versions; None on a machine without a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    driver = None
    try:
        m = re.search(r"Kernel Module\s+([\d.]+)", Path("/proc/driver/nvidia/version").read_text())
        driver = m.group(1) if m else None
    except OSError:
        pass
    nccl = None
    try:
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception:  # noqa: BLE001 - a build without NCCL
        pass
    props = torch.cuda.get_device_properties(0)
    return {"name": torch.cuda.get_device_name(0), "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(), "driver": driver, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "nccl": nccl}


def fingerprint() -> dict[str, Any]:
    return {"cpu": cpu(), "libraries": libraries(), "gpu": gpu()}


def _cpu_name(fp: dict) -> str:
    c = fp.get("cpu") or {}
    return f"{c.get('model', 'unknown CPU')} ({c.get('vendor', '?')} {c.get('family_model_stepping', '?')})"


def bits_can_match(recorded: dict[str, Any], here: dict[str, Any]) -> tuple[bool, str]:
    """Whether this machine can give the recorded run's bits, and the one-line reason.

    `recorded` and `here` are run-record `numerics` entries: `cpu_path` (absent in records made before
    the portable path existed, which ran natively) and `machine` (this module's fingerprint)."""
    path = recorded.get("cpu_path") or NATIVE
    fp_rec, fp_here = recorded.get("machine") or {}, here.get("machine") or {}
    rec_gpu, here_gpu = fp_rec.get("gpu"), fp_here.get("gpu")
    if rec_gpu or here_gpu:
        keys = ("name", "driver", "cuda", "cudnn", "nccl", "count")
        if not (rec_gpu and here_gpu) or any(rec_gpu.get(k) != here_gpu.get(k) for k in keys):
            return False, (f"GPU bits depend on the GPU and its software: recorded {_gpu_name(rec_gpu)}, "
                           f"here {_gpu_name(here_gpu)}")
    if path == PORTABLE:
        missing = [f for f in PORTABLE_NEEDS if f not in (fp_here.get("cpu") or {}).get("flags", [])]
        if (fp_here.get("cpu") or {}).get("arch") not in ("x86_64", "AMD64"):
            return False, (f"the portable path runs x86-64 AVX2 kernels; this machine is "
                           f"{(fp_here.get('cpu') or {}).get('arch')}")
        if missing:
            return False, f"the portable path needs {', '.join(missing)}, which {_cpu_name(fp_here)} lacks"
        rec_lib, here_lib = fp_rec.get("libraries") or {}, fp_here.get("libraries") or {}
        for key in ("torch", "mkl", "onednn"):
            if rec_lib.get(key) and here_lib.get(key) and rec_lib[key] != here_lib[key]:
                return False, f"{key} is {here_lib[key]} here, {rec_lib[key]} in the recorded run"
        return True, (f"portable CPU path (AVX2 kernels, MKL CNR): the bits do not depend on the CPU model "
                      f"(recorded on {_cpu_name(fp_rec)}, here {_cpu_name(fp_here)})")
    # native: the libraries chose kernels by processor; only the same kind of CPU takes the same ones
    if not fp_rec:
        cap = recorded.get("cpu_capability")
        return False, (f"recorded before the portable CPU path (ATen {cap}, MKL's own branch, no CPU model "
                       f"kept): its bits reproduce only on the kind of machine that made it, which this record "
                       f"cannot name; here {_cpu_name(fp_here)}")
    same = all((fp_rec.get("cpu") or {}).get(k) == (fp_here.get("cpu") or {}).get(k)
               for k in ("vendor", "family_model_stepping", "flags"))
    if same:
        return True, f"native CPU path on the same kind of CPU as recorded ({_cpu_name(fp_here)})"
    return False, (f"native CPU path: the libraries pick kernels by processor, and this is {_cpu_name(fp_here)}, "
                   f"not {_cpu_name(fp_rec)}")


def _gpu_name(g: dict | None) -> str:
    if not g:
        return "no GPU"
    return f"{g.get('name')} (driver {g.get('driver')}, CUDA {g.get('cuda')}, cuDNN {g.get('cudnn')}, NCCL {g.get('nccl')})"

