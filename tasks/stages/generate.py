"""Stage `generate`: K samples per pool prompt from the parent model."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import GenerateConfig, PoolConfig
from tasks.data.schema import SAMPLES, write_table
from tasks.models.backends import SamplingSpec, make_backend
from tasks.models.loading import model_fingerprint


def pool_prompts(prompts: pl.DataFrame, pool: PoolConfig, round_index: int, seed: int) -> pl.DataFrame:
    """The training prompts for the `round_index`-th iteration (1-based), easy to hard."""
    train = prompts.filter(pl.col("split") == "train").sort("prompt_id")
    if pool.difficulty_schedule:
        allowed = pool.difficulty_schedule[min(round_index, len(pool.difficulty_schedule)) - 1]
        train = train.filter(pl.col("difficulty").is_in(allowed))
    if pool.prompts_per_iteration and train.height > pool.prompts_per_iteration:
        train = train.sample(pool.prompts_per_iteration, seed=seed).sort("prompt_id")
    return train


def sample_prompts(model_dir: Path, prompts: pl.DataFrame, cfg: GenerateConfig, *, temperature: float, k: int,
                   seed: int, iteration: str, desc: str, pass_name: str = "main", backend=None,
                   first_batch: int = 0) -> pl.DataFrame:
    """Generate `k` samples per prompt and label them with the samples-table columns.

    `backend`: an already loaded backend, left open (a Dask worker reuses one per process);
    `first_batch`: this call's first batch index when it is one shard of a larger request."""
    own = backend is None
    backend = make_backend(cfg, str(model_dir), seed=seed) if own else backend
    try:
        spec = SamplingSpec(n=k, temperature=temperature, max_new_tokens=cfg.max_new_tokens, seed=seed,
                            top_p=cfg.top_p, stop=tuple(cfg.stop), first_batch=first_batch)
        out = backend.generate(prompts.select("prompt_id", "text"), spec, desc=desc)
    finally:
        if own:
            backend.close()
    return out.with_columns(iteration=pl.lit(iteration), temperature=pl.lit(float(temperature)),
                            model_hash=pl.lit(model_fingerprint(model_dir)), pass_name=pl.lit(pass_name))


def generate(model_dir: Path, prompts_path: Path, cfg: GenerateConfig, pool: PoolConfig, *, iteration: str,
             round_index: int, temperature: float, seed: int, out_path: Path) -> Path:
    """The samples table in one process (tasks/placement/shards.py computes the same table as shards)."""
    prompts = pl.read_parquet(prompts_path)
    chosen = pool_prompts(prompts, pool, round_index, seed)
    samples = sample_prompts(model_dir, chosen, cfg, temperature=temperature, k=cfg.k, seed=seed,
                             iteration=iteration, desc=f"generate {iteration}")
    return write_table(samples, out_path, SAMPLES)
