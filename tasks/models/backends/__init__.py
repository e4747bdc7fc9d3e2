"""Generation backends: Hugging Face `generate` (CPU fallback) and vLLM, one interface."""

from tasks.models.backends.base import GenerationBackend, SamplingSpec
from tasks.models.backends.factory import make_backend

__all__ = ["GenerationBackend", "SamplingSpec", "make_backend"]
