"""Loading models and tokenizers: one code path for a local folder or a Hub model id."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tasks.errors import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_ref(ref: str | Path, field: str = "model") -> str:
    """A local folder, or a Hub id like 'Qwen/Qwen2.5-0.5B'; anything else is a clear error."""
    path = Path(ref)
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ConfigError("folder has no config.json (nor a PEFT adapter_config.json).", file=str(path),
                              field=field, fix="point at a folder saved with save_pretrained().")
        return str(path)
    if _HUB_ID.match(str(ref)) and not str(ref).startswith((".", "/")):
        return str(ref)
    raise ConfigError("model folder not found.", file=str(ref), field=field,
                      fix="give an existing local folder or a Hub id such as 'org/name'.")


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _quiet_loading() -> None:
    """Weight-loading bars add nothing for small models and clutter nightly logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_tokenizer(ref: str | Path, revision: str | None = None):
    from transformers import AutoTokenizer

    from tasks.models.adapters import adapter_base, is_adapter_dir

    if is_adapter_dir(ref) and not (Path(ref) / "tokenizer_config.json").is_file():
        ref = adapter_base(ref)  # an adapter saved without a tokenizer uses its base's
    tok = AutoTokenizer.from_pretrained(resolve_model_ref(ref), revision=revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(ref: str | Path, revision: str | None = None, dtype: str = "auto", device: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.models.adapters import adapter_base, is_adapter_dir, merge_adapter

    _quiet_loading()
    if is_adapter_dir(ref):  # a LoRA adapter folder: its base with the adapter merged in
        adapter = resolve_model_ref(ref)
        base = load_causal_lm(adapter_base(adapter), dtype="float32" if dtype == "auto" else dtype, device="cpu")
        return merge_adapter(adapter, base).to(device or pick_device())
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_ref(ref), revision=revision, dtype=torch_dtype)
    return model.to(device or pick_device())


def render_prompts(tokenizer, texts: list[str]) -> list[str]:
    """The user turn in the model's chat template, ready for the assistant's answer."""
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                              add_generation_prompt=True) for t in texts]
    return [f"{t}\nA:" for t in texts]


def model_fingerprint(path: str | Path) -> str:
    """sha256 over a saved model folder's files (names and bytes), or the Hub id itself."""
    path = Path(path)
    if not path.is_dir():
        return f"hub:{path}"
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
