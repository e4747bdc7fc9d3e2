"""One vLLM engine kept alive between the stages of a process (CPU only).

An iteration samples the same model in calibrate and generate, and the next iteration's
calibrate samples the model that evaluate just sampled; starting an engine costs seconds each
time. The engine is reused only for the same model files and settings, and its prefix cache is
emptied first, so every stage sees a freshly started engine's state and `dvc repro` of one stage
gives the same bytes as the whole flow. On GPUs the engine is never kept: its memory belongs to
training and reward scoring between samplings.
"""

from __future__ import annotations

from pathlib import Path

from tasks.config.recipe import VLLMConfig

_HELD: dict[str, tuple] = {}  # "engine" -> (key, backend); process-local, never a setting


def model_key(model_ref: str) -> tuple:
    """The folder's files with their sizes and modification times (a rewritten model is a new key)."""
    path = Path(model_ref)
    if not path.is_dir():
        return (str(model_ref),)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return (str(path.resolve()), *((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def shared_engine(model_ref: str, cfg: VLLMConfig, seed: int):
    """The held engine when it serves this model with these settings, else a new one (replacing it)."""
    from tasks.models.backends.vllm_backend import VLLMBackend, on_cpu

    if not (cfg.reuse_engine and on_cpu()):
        return VLLMBackend(model_ref, cfg, seed=seed)
    key = (model_key(model_ref), cfg)
    held = _HELD.get("engine")
    if held and held[0] == key:
        held[1].llm.reset_prefix_cache()
        return held[1]
    release_engine()
    backend = VLLMBackend(model_ref, cfg, seed=seed)  # outputs depend on per-request seeds, not this one
    backend.shared = True
    _HELD["engine"] = (key, backend)
    return backend


def release_engine() -> None:
    """Free the held engine, if any."""
    held = _HELD.pop("engine", None)
    if held:
        held[1].shared = False
        held[1].close()
