"""The backend interface. Every backend returns the same columns for the same request."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

log = logging.getLogger(__name__)

# `text` is the request's `prefix` (when the prompts frame has one) followed by the completion;
# `n_tokens` counts generated tokens only, never the prefix.
OUTPUT_SCHEMA = {"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String, "n_tokens": pl.Int32,
                 "finish_reason": pl.String, "seed": pl.Int64}


@dataclass(frozen=True)
class SamplingSpec:
    """What to sample. temperature 0 means greedy (then n must be 1)."""

    n: int
    temperature: float
    max_new_tokens: int
    seed: int
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    # When this call is one shard of a larger request: the index of its first batch there. The HF
    # backend seeds batch b by (seed, first_batch + b), so a shard of whole batches reproduces the
    # unsharded run; vLLM seeds per prompt and ignores it.
    first_batch: int = 0

    def __post_init__(self) -> None:
        if self.temperature == 0 and self.n != 1:
            raise ValueError("greedy decoding (temperature 0) yields one sample per prompt")


class GenerationBackend(Protocol):
    name: str

    def generate(self, prompts: pl.DataFrame, spec: SamplingSpec, desc: str = "generate") -> pl.DataFrame:
        """`prompts` has prompt_id and text, optionally prefix (the start of the assistant turn, which the
        model continues; null or absent: none); returns OUTPUT_SCHEMA rows, n per prompt."""
        ...

    def close(self) -> None: ...


def prefixes(prompts: pl.DataFrame) -> list[str]:
    """Each request's assistant-turn prefix ("" where there is none)."""
    if "prefix" not in prompts.columns:
        return [""] * prompts.height
    return prompts["prefix"].fill_null("").to_list()


def prepare_vllm_env() -> None:
    """Set before vLLM is first imported: its logs go to stderr at WARNING (stdout belongs to the
    command, e.g. `--json`), and the engine runs in-process (no spawn, a 3 s start)."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def vllm_usable() -> bool:
    prepare_vllm_env()
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend_name(name: str) -> str:
    """'auto' picks vLLM when it imports, else Hugging Face; the choice is logged."""
    if name != "auto":
        return name
    chosen = "vllm" if vllm_usable() else "hf"
    log.info("generation backend: %s (auto; vLLM %s)", chosen, "available" if chosen == "vllm" else "not installed")
    return chosen
