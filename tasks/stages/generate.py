"""Stage `generate`: K samples per pool prompt from the parent model."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from tasks.config.recipe import GenerateConfig, HintsConfig, PoolConfig, VerifierConfig
from tasks.config.allocation import AllocationConfig
from tasks.data.schema import ALLOCATION, SAMPLES, write_table
from tasks.models.backends import SamplingSpec, make_backend
from tasks.models.loading import model_fingerprint
from tasks.sampling.allocation import budget_of, history_counts, plan_allocation, record_hint_pass, with_n
from tasks.sampling.hints import hint_targets, mark_hinted, mark_self
from tasks.seeds import derive_seed


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
        # prefix: prefill; n: the prompt's own sample count (adaptive K)
        request = [c for c in ("prompt_id", "text", "prefix", "n") if c in prompts.columns]
        out = backend.generate(prompts.select(request), spec, desc=desc)
    finally:
        if own:
            backend.close()
    return out.with_columns(iteration=pl.lit(iteration), temperature=pl.lit(float(temperature)),
                            model_hash=pl.lit(model_fingerprint(model_dir)), pass_name=pl.lit(pass_name))


def hint_requests(first_pass: pl.DataFrame, chosen: pl.DataFrame, hints: HintsConfig, verifier: VerifierConfig,
                  max_samples: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The first pass verified by the recipe's verifier (prompt_id, correct; no reward model: the score
    stage judges every sample again), and the hint pass's requests: the prompts below hints.min_correct,
    hinted, within `max_samples` (the reserve under adaptive K)."""
    from tasks.verify.verifiers import make_verifier

    verified = make_verifier(verifier.type, verifier).verify(first_pass, chosen.select("prompt_id", "text", "answer"))
    verified = verified.select("prompt_id", "correct")
    return verified, hint_targets(verified, chosen, hints, max_samples=max_samples)


def hint_reserve(hints: HintsConfig | None, allocation: AllocationConfig | None, n_prompts: int, k: int) -> int:
    """Samples kept for the hint pass: with adaptive K, round(hints.reserve x budget) off the first pass;
    else 0, and the pass adds its samples to the first pass's."""
    if hints is None or not hints.enabled or allocation is None or not allocation.enabled:
        return 0
    return round(hints.reserve * budget_of(allocation, n_prompts, k))


def with_hint_pass(first_pass: pl.DataFrame, hinted: pl.DataFrame | None, targets: pl.DataFrame) -> pl.DataFrame:
    """Both passes in one samples table: first-pass rows as origin self, hinted rows marked and offset."""
    parts = [mark_self(first_pass)] + ([mark_hinted(hinted, targets)] if hinted is not None and hinted.height else [])
    return pl.concat(parts, how="diagonal_relaxed")


def allocate(chosen: pl.DataFrame, prompts: pl.DataFrame, allocation: AllocationConfig | None, *, k: int,
             cap: int, iteration: str, seed: int, history_path: Path | None = None,
             reserve: int = 0) -> pl.DataFrame:
    """The ALLOCATION rows of the pool (tasks/sampling/allocation.py): generate.k each when allocation is
    off; else the budget shared by the history table, the previous iteration's scored.parquet."""
    allocation = allocation or AllocationConfig()
    counts, previous = None, None
    if allocation.enabled and history_path is not None:
        counts = history_counts(pl.read_parquet(history_path, columns=_history_columns(history_path)), prompts)
        previous = Path(history_path).parent.name
    return plan_allocation(chosen, counts, allocation, k=k, cap=cap, iteration=iteration, seed=seed,
                           prev_iteration=previous, reserve=reserve)


def _history_columns(path: Path) -> list[str]:
    names = pl.read_parquet_schema(path)
    return [c for c in ("prompt_id", "correct", "origin") if c in names]


def planned_pool(chosen: pl.DataFrame, plan: pl.DataFrame, allocation: AllocationConfig | None) -> pl.DataFrame:
    """The pool as the first pass requests it: with adaptive K, each prompt's own `n`; off, unchanged
    (no n column, so the backends sample exactly as before)."""
    return with_n(chosen, plan) if allocation is not None and allocation.enabled else chosen


def hint_figures(first_pass_s: float, hint_pass_s: float, targets: pl.DataFrame,
                 hinted: pl.DataFrame | None) -> dict:
    """The cost report's figures of the hint pass (verification of the first pass included in its time)."""
    return {"first_pass_s": round(first_pass_s, 2), "hint_pass_s": round(hint_pass_s, 2),
            "hint_prompts": targets.height, "hint_samples": 0 if hinted is None else hinted.height}


def hint_desc(iteration: str) -> str:
    return f"generate {iteration} hint"  # part of the HF backend's batch seeds: keep it fixed


def generate(model_dir: Path, prompts_path: Path, cfg: GenerateConfig, pool: PoolConfig, *, iteration: str,
             round_index: int, temperature: float, seed: int, out_path: Path, hints: HintsConfig | None = None,
             verifier: VerifierConfig | None = None, hint_seed: int | None = None,
             allocation: AllocationConfig | None = None, history_path: Path | None = None, cap: int = 1,
             allocation_out: Path | None = None, timings: dict | None = None) -> Path:
    """The samples table in one process (tasks/placement/shards.py computes the same table as shards).
    `timings`, when given, receives the hint pass's figures (`hint_figures`; nothing with hints off).
    With hints on, a second pass re-samples the prompts the first left unsolved, with a hint and its own
    seed (`hint_seed`); the first pass is exactly the one a hints-off run samples. `allocation_out`
    (None: not written) records each prompt's first-pass sample count and why (adaptive K)."""
    prompts = pl.read_parquet(prompts_path)
    chosen = pool_prompts(prompts, pool, round_index, seed)
    reserve = hint_reserve(hints, allocation, chosen.height, cfg.k)
    plan = allocate(chosen, prompts, allocation, k=cfg.k, cap=cap, iteration=iteration, seed=seed,
                    history_path=history_path, reserve=reserve)
    chosen = planned_pool(chosen, plan, allocation)
    if hints is None or not hints.enabled:
        if allocation_out is not None:
            write_table(plan, allocation_out, ALLOCATION)
        samples = sample_prompts(model_dir, chosen, cfg, temperature=temperature, k=cfg.k, seed=seed,
                                 iteration=iteration, desc=f"generate {iteration}")
        return write_table(samples, out_path, SAMPLES)
    backend = make_backend(cfg, str(model_dir), seed=seed)  # one model load for both passes
    started = time.perf_counter()
    try:
        first = sample_prompts(model_dir, chosen, cfg, temperature=temperature, k=cfg.k, seed=seed,
                               iteration=iteration, desc=f"generate {iteration}", backend=backend)
        first_done = time.perf_counter()
        verified, targets = hint_requests(first, chosen, hints, verifier or VerifierConfig(), reserve or None)
        hint_seed = derive_seed(seed, iteration, "generate-hint") if hint_seed is None else hint_seed
        hinted = sample_prompts(model_dir, targets, cfg, temperature=temperature, k=hints.k, seed=hint_seed,
                                iteration=iteration, desc=hint_desc(iteration), pass_name="hint",
                                backend=backend) if targets.height else None
    finally:
        backend.close()
    if timings is not None:
        timings |= hint_figures(first_done - started, time.perf_counter() - first_done, targets, hinted)
    if allocation_out is not None:  # the allocation rows say which prompts the pass took, and why
        write_table(record_hint_pass(plan, verified, targets, hints.k), allocation_out, ALLOCATION)
    return write_table(with_hint_pass(first, hinted, targets), out_path, SAMPLES)
