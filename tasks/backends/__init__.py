"""Generation backends: Hugging Face `generate` (CPU fallback) and vLLM, one interface."""

from tasks.backends.base import GenerationBackend, SamplingSpec
from tasks.backends.factory import make_backend

__all__ = ["GenerationBackend", "SamplingSpec", "make_backend"]
