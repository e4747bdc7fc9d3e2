"""Bootstrap stages: the base model (`base`) and the warm-up SFT that makes iteration 0 (`warmup`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from tasks.config.recipe import GGUFInit, PretrainedInit, Recipe, TinyLlamaInit
from tasks.stages.train import seed_examples, sft
from tasks.workspace.atomic import atomic_dir


def init_base(recipe: Recipe, seed: int, out_dir: Path) -> Path:
    """Build the tiny preset, dequantise a GGUF file, or snapshot a pretrained model (local folder or Hub
    id) into the workspace."""
    init = recipe.model.init
    if isinstance(init, TinyLlamaInit):
        from tasks.models.tiny_model import build_tiny_llama

        return build_tiny_llama(init, seed, out_dir)
    if isinstance(init, GGUFInit):
        from tasks.models.gguf_import import import_gguf

        import_gguf(init.path, init.sha256, init.dtype, out_dir)
        return out_dir
    assert isinstance(init, PretrainedInit)
    from tasks.models.loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(init.name_or_path, revision=init.revision, dtype=init.dtype, device="cpu")
    tokenizer = load_tokenizer(init.name_or_path, revision=init.revision)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def warmup(recipe: Recipe, base_dir: Path, prompts_path: Path, seed: int, out_dir: Path,
           checkpoint_dir: Path | None = None) -> dict:
    """SFT on the labelled seed split; with warm-up disabled iteration 0 is the base model."""
    if not recipe.warmup.enabled:
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(base_dir, tmp, dirs_exist_ok=True)
        return {"warmup": "disabled"}
    examples = seed_examples(pl.read_parquet(prompts_path))
    return sft(base_dir, examples, recipe.warmup, seed, out_dir, checkpoint_dir=checkpoint_dir, section="warmup")
