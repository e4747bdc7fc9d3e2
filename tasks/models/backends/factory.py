"""Which backend a generate config asks for. Apart from base.py, so that the backends build on
base and this module on them, never in a circle."""

from __future__ import annotations

from tasks.models.backends.base import GenerationBackend, resolve_backend_name


def make_backend(cfg, model_ref: str, seed: int = 0) -> GenerationBackend:
    """The backend a GenerateConfig asks for, loaded with `model_ref` (folder or Hub id)."""
    name = resolve_backend_name(cfg.backend)
    if name == "hf":
        from tasks.models.backends.hf import HFBackend

        return HFBackend(model_ref, batch_size=cfg.batch_size)
    if name == "vllm":
        from tasks.models.backends.engine_cache import shared_engine

        return shared_engine(model_ref, cfg.vllm, seed)
    raise ValueError(f"unknown backend {name!r}")
