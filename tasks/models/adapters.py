"""LoRA adapters on disk.

A LoRA training run saves one self-contained folder: the merged model at its root (what every
consumer loads: the HF backend, vLLM, evaluation, the next iteration) and the adapter itself in
`adapter/`, whose base is recorded relative to the folder so the output hashes the same wherever
the workspace lives. Any PEFT adapter folder (adapter_config.json, no config.json) is also
accepted as a policy: it is loaded onto its base.

This module knows the folder format only; loading is tasks.models.loading's, saving a training run's
output tasks.models.sft_setup's, so that neither imports the other in a circle.
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


def make_portable(adapter_dir: Path, init_model: str | Path, final_adapter_dir: Path) -> None:
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


def merge_adapter(adapter_dir: str | Path, base_model):
    """`base_model` (a loaded transformers model) with the adapter in `adapter_dir` merged in."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(adapter_dir)).merge_and_unload()
