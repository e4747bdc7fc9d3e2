"""LoRA adapters on disk.

A LoRA training run saves one self-contained folder: the merged model at its root (what every
consumer loads: the HF backend, vLLM, evaluation, the next iteration) and the adapter itself in
`adapter/`, whose base is recorded relative to the folder so the output hashes the same wherever
the workspace lives. Any PEFT adapter folder (adapter_config.json, no config.json) is also
accepted as a policy: it is loaded onto its base.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter folder that is not also a full model."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_config(path: str | Path) -> dict:
    return json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))


def adapter_base(path: str | Path) -> str:
    """The adapter's base model: a folder relative to the adapter, an absolute folder, or a Hub id."""
    ref = adapter_config(path)["base_model_name_or_path"]
    local = Path(path) / ref
    if not Path(ref).is_absolute() and (local / "config.json").is_file():
        return str(local.resolve())
    return ref


def load_adapter_model(path: str | Path, dtype: str = "float32"):
    """The adapter's base with the adapter merged in: a plain transformers model (on CPU)."""
    return merge_adapter(Path(path), adapter_base(path), dtype)


def save_lora_output(peft_model, tokenizer, init_model: str | Path, final_dir: Path, tmp_dir: Path) -> None:
    """Write the adapter to `tmp_dir/adapter` and the merged fp32 model to `tmp_dir` (renamed to `final_dir`)."""
    adapter_dir = tmp_dir / ADAPTER_DIR
    peft_model.save_pretrained(adapter_dir)
    # merge into a freshly loaded full-precision base: exact for LoRA, and the only way for a quantized base
    merge_adapter(adapter_dir, str(init_model)).save_pretrained(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    _make_portable(adapter_dir, init_model, final_dir / ADAPTER_DIR)


def _make_portable(adapter_dir: Path, init_model: str | Path, final_adapter_dir: Path) -> None:
    """Same bytes wherever the workspace lives and whatever the hash seed: the base as a relative path,
    module lists sorted (PEFT keeps them as sets), and no generated model card (it names the absolute path)."""
    cfg = adapter_config(adapter_dir)
    init = Path(init_model)
    cfg["base_model_name_or_path"] = (Path(os.path.relpath(init.resolve(), final_adapter_dir.resolve())).as_posix()
                                      if init.is_dir() else str(init_model))
    for key in ("target_modules", "modules_to_save", "exclude_modules"):
        if isinstance(cfg.get(key), list):
            cfg[key] = sorted(cfg[key])
    (adapter_dir / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (adapter_dir / "README.md").unlink(missing_ok=True)


def merge_adapter(adapter_dir: Path, base: str, dtype: str = "float32"):
    from peft import PeftModel

    from tasks.modeling import load_causal_lm

    model = load_causal_lm(base, dtype=dtype, device="cpu")
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
