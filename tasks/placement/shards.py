"""Sharded generation and scoring: data-defined shards, one Parquet file each, merged in shard order.

Shards are consecutive runs of the sorted prompts, cut only where the unsharded stage would
start a new batch: a generation batch for the HF backend (seeded by its global batch index),
a reward-model forward pass for scoring (padding makes a row's reward depend, in the last bits,
on its batch). So the merged table is byte-identical to the unsharded stage's output, whatever
the number of workers. Workers run `run_shard`. The stage is handed a runner that maps the
shards over workers (flows/sharded.py: Prefect's DaskTaskRunner); without one they run here, one
after another, which writes the same bytes.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from tasks.config.allocation import AllocationConfig
from tasks.config.recipe import (GenerateConfig, HintsConfig, PoolConfig, Recipe, RewardConfig, ScaleConfig,
                                 VerifierConfig)
from tasks.data.schema import ALLOCATION, SAMPLES, SCORED, Table, write_table
from tasks.errors import ConfigError


class ShardFailedError(RuntimeError):
    """One or more shards failed; the stage wrote nothing."""


SHARDED_STAGES = ("generate", "score")


def is_sharded(recipe: Recipe, stage: str) -> bool:
    """Whether the recipe computes this stage as shards on workers."""
    return recipe.scale.runner != "local" and stage in SHARDED_STAGES


class _Shard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    index: int
    count: int
    inputs: str  # sorted Parquet input; this shard is rows [offset, offset + length)
    offset: int
    length: int
    out: str


class GenerateShard(_Shard):
    model_dir: str
    cfg: GenerateConfig
    temperature: float
    k: int
    seed: int
    iteration: str
    desc: str
    first_batch: int
    pass_name: str = "main"


class ScoreShard(_Shard):
    prompts: str
    verifier: VerifierConfig
    reward: RewardConfig
    reward_dir: str | None


def shard_bounds(can_cut: np.ndarray, shard_size: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) ranges over len(can_cut) units, each at least `shard_size` long
    (except the last) and ending only after a unit i with can_cut[i]; the last unit always ends one."""
    n = len(can_cut)
    ends = np.union1d(np.flatnonzero(can_cut) + 1, [n])
    bounds, start = [], 0
    while start < n:  # one step per shard, not per row
        end = int(ends[min(np.searchsorted(ends, start + shard_size), len(ends) - 1)])
        bounds.append((start, end))
        start = end
    return bounds


# ------------------------------------------------------------------ planning (the calling process)
def plan_generate(n_prompts: int, batch_size: int, backend: str, shard_size: int) -> list[tuple[int, int, int]]:
    """(offset, length, first_batch) per shard over the prompts sorted by prompt_id."""
    align = batch_size if backend == "hf" else 1  # vLLM seeds each prompt, so any cut reproduces it
    units = np.arange(1, n_prompts + 1)
    return [(s, e - s, s // batch_size if backend == "hf" else 0)
            for s, e in shard_bounds(units % align == 0, shard_size)]


def plan_score(samples: pl.DataFrame, reward_on: bool, reward_kind: str, shard_size: int) -> list[tuple[int, int]]:
    """(offset, length) row ranges of whole prompts, cut where a reward-model batch ends."""
    from tasks.stages.reward import SCORE_BATCH

    if samples.height == 0:
        return []
    if not samples["prompt_id"].is_sorted():  # not written by generate: one shard keeps every prompt whole
        return [(0, samples.height)]
    # reward-model rows per sample: one (ORM) or one per step prefix (PRM), as RewardScorer batches them
    units = pl.col("text").str.split(". ").list.len() if reward_kind == "prm" else pl.lit(1)
    per = (samples.lazy().select("prompt_id", units.alias("u"))
           .group_by("prompt_id", maintain_order=True).agg(rows=pl.len(), units=pl.col("u").sum())
           .with_columns(row_end=pl.col("rows").cum_sum(), unit_end=pl.col("units").cum_sum()).collect())
    can_cut = (per["unit_end"] % SCORE_BATCH == 0).to_numpy() if reward_on else np.ones(per.height, bool)
    row_end = np.concatenate([[0], per["row_end"].to_numpy()])
    return [(int(row_end[s]), int(row_end[e] - row_end[s])) for s, e in shard_bounds(can_cut, shard_size)]


# ------------------------------------------------------------------ one shard (a worker process)
_MODEL_LOCK = threading.Lock()  # one model call at a time per process: torch's RNG is process-wide
_LOADED: dict[str, tuple[tuple, Any]] = {}  # per process: the last model of each kind, reused by later shards


def _files_key(path: str | None) -> tuple:
    """Cheap identity of a model folder (names, sizes, mtimes), so a retrained model is reloaded."""
    if path is None or not Path(path).is_dir():
        return (path,)
    return (path, *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(Path(path).rglob("*"))
                    if f.is_file()))


def _cached(kind: str, key: tuple, load: Callable[[], Any]) -> Any:
    held = _LOADED.get(kind)
    # a backend closed elsewhere (the engine cache releasing a shared engine) is loaded again
    if held is None or held[0] != key or getattr(held[1], "closed", False):
        if held is not None and hasattr(held[1], "close"):
            held[1].close()
        _LOADED[kind] = (key, load())
    return _LOADED[kind][1]


def generate_shard(job: GenerateShard) -> str:
    from tasks.models.backends import make_backend
    from tasks.stages.generate import sample_prompts

    prompts = pl.scan_parquet(job.inputs).slice(job.offset, job.length).collect()
    key = (job.cfg.model_dump_json(), job.seed, _files_key(job.model_dir))
    with _MODEL_LOCK:
        backend = _cached("generate", key, lambda: make_backend(job.cfg, job.model_dir, seed=job.seed))
        samples = sample_prompts(Path(job.model_dir), prompts, job.cfg, temperature=job.temperature, k=job.k,
                                 seed=job.seed, iteration=job.iteration, desc=job.desc, backend=backend,
                                 first_batch=job.first_batch, pass_name=job.pass_name)
    return str(write_table(samples, job.out, SAMPLES))


def score_shard(job: ScoreShard) -> str:
    from tasks.stages.reward import RewardScorer, add_rewards, reward_enabled
    from tasks.stages.score import score_table

    samples = pl.scan_parquet(job.inputs).slice(job.offset, job.length).collect()
    prompts = pl.read_parquet(job.prompts)
    reward_dir = Path(job.reward_dir) if job.reward_dir else None
    verified = score_table(samples, prompts, job.verifier)  # as score() does; outside the model lock
    with _MODEL_LOCK:
        scorer = None
        if reward_dir is not None and reward_enabled(reward_dir):
            scorer = _cached("reward", (job.reward.kind, _files_key(job.reward_dir)),
                             lambda: RewardScorer(reward_dir, job.reward.kind))
        scored = add_rewards(verified, prompts, reward_dir, job.reward, scorer=scorer)
    return str(write_table(scored, job.out, SCORED))


def run_shard(job: GenerateShard | ScoreShard) -> str:
    """Write one shard's Parquet (atomically) and return its path."""
    return generate_shard(job) if isinstance(job, GenerateShard) else score_shard(job)


# ------------------------------------------------------------------ whole stages (the calling process)
# (stage, jobs, scale) -> the shards' output paths in shard order; raises ShardFailedError
ShardRunner = Callable[[str, list, ScaleConfig], list[str]]


def run_here(stage: str, jobs: list, scale: ScaleConfig) -> list[str]:
    """The runner when none is handed: every shard in this process, in order."""
    return [run_shard(job) for job in jobs]


def _shard_dir(out_path: Path) -> Path:
    return out_path.with_name(f".{out_path.name}.shards")


def _run_and_merge(stage: str, jobs: list, scale: ScaleConfig, shard_dir: Path, out_path: Path,
                   table: Table, runner: ShardRunner | None) -> Path:
    """Run the shards, then concatenate them in shard order into `out_path`; on any failure the
    shard folder is removed and `out_path` is left as it was."""
    try:
        paths = (runner or run_here)(stage, jobs, scale) if jobs else []
        merged = pl.concat([pl.read_parquet(p) for p in paths]) if paths else pl.DataFrame(schema=table.schema)
        return write_table(merged, out_path, table)
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)


def _generate_shards(model_dir: Path, prompts: pl.DataFrame, cfg: GenerateConfig, scale: ScaleConfig, *,
                     iteration: str, temperature: float, k: int, seed: int, desc: str, pass_name: str,
                     out_path: Path, runner: ShardRunner | None) -> Path:
    """One sampling pass over `prompts` (prompt_id, text, optionally prefix) as shards, merged into `out_path`."""
    shard_dir = _shard_dir(out_path)
    shutil.rmtree(shard_dir, ignore_errors=True)  # leftovers of a crashed run are never reused
    shard_dir.mkdir(parents=True)
    inputs = shard_dir / "prompts.parquet"
    prompts.select([c for c in ("prompt_id", "text", "prefix", "n") if c in prompts.columns]).sort("prompt_id") \
        .write_parquet(inputs)
    plan = plan_generate(prompts.height, cfg.batch_size, cfg.backend, scale.shard_size)
    jobs = [GenerateShard(stage="generate", index=i, count=len(plan), inputs=str(inputs), offset=off,
                          length=n, out=str(shard_dir / f"shard-{i:05d}.parquet"), model_dir=str(model_dir),
                          cfg=cfg, temperature=temperature, k=k, seed=seed, iteration=iteration,
                          desc=desc, first_batch=b, pass_name=pass_name)
            for i, (off, n, b) in enumerate(plan)]
    return _run_and_merge("generate", jobs, scale, shard_dir, out_path, SAMPLES, runner)


def generate_sharded(model_dir: Path, prompts_path: Path, cfg: GenerateConfig, pool: PoolConfig,
                     scale: ScaleConfig, *, iteration: str, round_index: int, temperature: float, seed: int,
                     out_path: Path, runner: ShardRunner | None = None, hints: HintsConfig | None = None,
                     verifier: VerifierConfig | None = None, hint_seed: int | None = None,
                     allocation: AllocationConfig | None = None, history_path: Path | None = None, cap: int = 1,
                     allocation_out: Path | None = None, timings: dict | None = None) -> Path:
    """`generate`'s output (tasks/stages/generate.py), computed as shards by `runner`. With hints on, the
    first pass is merged and verified here, then the hinted prompts are sharded the same way. The
    allocation (adaptive K) is planned here and travels to the workers as the prompts' `n` column."""
    from tasks.models.backends.base import resolve_backend_name
    from tasks.seeds import derive_seed
    from tasks.sampling.allocation import record_hint_pass
    from tasks.stages.generate import (allocate, hint_desc, hint_figures, hint_requests, hint_reserve, planned_pool,
                                       pool_prompts, with_hint_pass)

    prompts = pl.read_parquet(prompts_path)
    chosen = pool_prompts(prompts, pool, round_index, seed)
    out_path = Path(out_path)
    cfg = cfg.model_copy(update={"backend": resolve_backend_name(cfg.backend)})  # every worker alike
    reserve = hint_reserve(hints, allocation, chosen.height, cfg.k)
    allocation_plan = allocate(chosen, prompts, allocation, k=cfg.k, cap=cap, iteration=iteration, seed=seed,
                               history_path=history_path, reserve=reserve)
    chosen = planned_pool(chosen, allocation_plan, allocation)
    if "n" in chosen.columns and cfg.backend == "hf":  # HF shards are cut along uniform batches
        raise ConfigError("is on, but sharded generation on the HF backend cannot take per-prompt sample counts.",
                          field="allocation.enabled", fix="use generate.backend: vllm, or scale.runner: local.")
    common = dict(cfg=cfg, scale=scale, iteration=iteration, temperature=temperature, runner=runner)
    if hints is None or not hints.enabled:
        if allocation_out is not None:
            write_table(allocation_plan, allocation_out, ALLOCATION)
        return _generate_shards(model_dir, chosen, k=cfg.k, seed=seed, desc=f"generate {iteration}",
                                pass_name="main", out_path=out_path, **common)
    first_path = out_path.with_name(f".{out_path.name}.first")
    hint_path = out_path.with_name(f".{out_path.name}.hint")
    started = time.perf_counter()
    try:
        first = pl.read_parquet(_generate_shards(model_dir, chosen, k=cfg.k, seed=seed, desc=f"generate {iteration}",
                                                 pass_name="main", out_path=first_path, **common))
        first_done = time.perf_counter()
        verified, targets = hint_requests(first, chosen, hints, verifier or VerifierConfig(), reserve or None)
        hint_seed = derive_seed(seed, iteration, "generate-hint") if hint_seed is None else hint_seed
        hinted = pl.read_parquet(_generate_shards(
            model_dir, targets, k=hints.k, seed=hint_seed, desc=hint_desc(iteration), pass_name="hint",
            out_path=hint_path, **common)) if targets.height else None
        if timings is not None:
            timings |= hint_figures(first_done - started, time.perf_counter() - first_done, targets, hinted)
        if allocation_out is not None:
            write_table(record_hint_pass(allocation_plan, verified, targets, hints.k), allocation_out, ALLOCATION)
        return write_table(with_hint_pass(first, hinted, targets), out_path, SAMPLES)
    finally:
        first_path.unlink(missing_ok=True)
        hint_path.unlink(missing_ok=True)


def score_sharded(samples_path: Path, prompts_path: Path, verifier: VerifierConfig, reward: RewardConfig,
                  reward_dir: Path | None, out_path: Path, scale: ScaleConfig,
                  runner: ShardRunner | None = None) -> Path:
    """`score`'s output (tasks/stages/score.py), computed as shards of whole prompts by `runner`."""
    from tasks.stages.reward import reward_enabled

    out_path = Path(out_path)
    samples = pl.read_parquet(samples_path, columns=["prompt_id", "text"])
    reward_on = reward_dir is not None and reward_enabled(Path(reward_dir))
    plan = plan_score(samples, reward_on, reward.kind, scale.shard_size)
    shard_dir = _shard_dir(out_path)
    shutil.rmtree(shard_dir, ignore_errors=True)
    jobs = [ScoreShard(stage="score", index=i, count=len(plan), inputs=str(samples_path), offset=off, length=n,
                       out=str(shard_dir / f"shard-{i:05d}.parquet"), prompts=str(prompts_path),
                       verifier=verifier, reward=reward, reward_dir=str(reward_dir) if reward_dir else None)
            for i, (off, n) in enumerate(plan)]
    return _run_and_merge("score", jobs, scale, shard_dir, out_path, SCORED, runner)
