"""Adaptive K: share a fixed per-iteration sample budget among the pool prompts.

Each prompt's chance of a correct sample, p_hat, is estimated from the previous iteration's scored
table (its own samples, shrunk towards the mean of its difficulty). The budget is then spent to
maximise the expected number of training examples select can keep,

    sum_i E[min(C_i, cap)],   C_i ~ Binomial(k_i, p_hat_i),   cap = select.cap_per_prompt,

with k_min <= k_i <= k_max. The j-th sample of a prompt adds p * P(Binomial(j - 1, p) < cap) (it
counts only when it is correct and fewer than `cap` of the earlier ones were), which never grows
with j. The objective is therefore a sum of concave functions, and taking the largest marginal
gains across all prompts (greedy) is optimal, each prompt's taken gains being a prefix.

Pure functions over Polars frames; numpy does the gain matrix (one column per j, never a row loop).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.config.allocation import AllocationConfig
from tasks.data.schema import ALLOCATION
from tasks.errors import ConfigError
from tasks.seeds import derive_seed

GAIN_DECIMALS = 12  # gains equal to this precision tie, and ties go to (prompt_id, j): bytes never hang on a last bit

COUNTS_SCHEMA = {"prompt_id": pl.String, "n": pl.Int64, "c": pl.Int64, "difficulty": pl.Int32}


def history_counts(scored: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
    """Per prompt of a scored table: n samples and c correct among its own (`self`) samples, and its
    difficulty from the prompts table. Hinted samples are left out: they measure the hint, not the prompt."""
    rows = scored.filter(pl.col("origin") == "self") if "origin" in scored.columns else scored
    per = rows.group_by("prompt_id").agg(n=pl.len().cast(pl.Int64),
                                         c=pl.col("correct").fill_null(False).sum().cast(pl.Int64))
    return (per.join(prompts.select("prompt_id", pl.col("difficulty").cast(pl.Int32)), on="prompt_id", how="left")
            .select(list(COUNTS_SCHEMA)).cast(COUNTS_SCHEMA).sort("prompt_id"))


def estimate_p(pool: pl.DataFrame, counts: pl.DataFrame, cfg: AllocationConfig) -> pl.DataFrame:
    """prompt_id, difficulty, prev_n, prev_c, prior_p, prior_from, p_hat for every pool prompt.

    prior_p: the history's mean pass rate (c/n per prompt, averaged over prompts) at the prompt's
    difficulty, else over all its prompts. p_hat = (c + a prior_p) / (n + a) with a = prior_strength;
    a prompt the history never sampled gets p_hat = prior_p. Clipped to [p_floor, 1 - p_floor]."""
    rates = counts.filter(pl.col("n") > 0).with_columns(rate=pl.col("c") / pl.col("n"))
    overall = float(rates["rate"].mean()) if rates.height else None
    by_level = rates.drop_nulls("difficulty").group_by("difficulty").agg(level_p=pl.col("rate").mean())
    a = float(cfg.prior_strength)
    seen = pl.col("prev_n").is_not_null() & (pl.col("prev_n") > 0)
    raw = pl.when(seen).then((pl.col("prev_c") + a * pl.col("prior_p")) / (pl.col("prev_n") + a)) \
        .otherwise(pl.col("prior_p"))
    return (pool.select("prompt_id", pl.col("difficulty").cast(pl.Int32)).sort("prompt_id")
            .join(counts.select("prompt_id", prev_n=pl.col("n").cast(pl.Int32), prev_c=pl.col("c").cast(pl.Int32)),
                  on="prompt_id", how="left")
            .join(by_level, on="difficulty", how="left")
            .with_columns(prior_p=pl.col("level_p").fill_null(overall).cast(pl.Float64),
                          prior_from=pl.when(pl.col("level_p").is_not_null()).then(pl.lit("difficulty"))
                          .otherwise(pl.lit("overall")))
            .with_columns(p_hat=raw.clip(cfg.p_floor, 1.0 - cfg.p_floor))
            .drop("level_p").sort("prompt_id"))


def marginal_gains(p: np.ndarray, k_max: int, cap: int) -> np.ndarray:
    """(N, k_max) matrix: column j-1 is the expected gain in min(C, cap) of a prompt's j-th sample,
    p * P(Binomial(j - 1, p) < cap). Non-increasing along each row."""
    p = np.asarray(p, dtype=np.float64)
    pmf = np.zeros((p.size, cap))  # P(C = 0..cap-1) after m samples; counts at or above cap are never needed
    pmf[:, 0] = 1.0
    below = np.empty((p.size, k_max))
    for m in range(k_max):  # one column per sample count, vectorised over prompts
        below[:, m] = pmf.sum(axis=1)
        shifted = np.zeros_like(pmf)
        shifted[:, 1:] = pmf[:, :-1]
        pmf = pmf * (1.0 - p[:, None]) + shifted * p[:, None]
    gains = np.round(p[:, None] * np.minimum(below, 1.0), GAIN_DECIMALS)
    return np.minimum.accumulate(gains, axis=1)  # exact monotonicity, whatever the rounding did


def greedy_counts(gains: np.ndarray, k_min: int, extra: int) -> tuple[np.ndarray, float | None]:
    """Samples per prompt when `extra` samples beyond k_min each go to the largest marginal gains
    (ties: lower row, then lower j), and the smallest gain taken (None when none was)."""
    n_rows, k_max = gains.shape
    slots = gains[:, k_min:]  # the (k_min+1)-th .. k_max-th sample of each prompt
    take = min(extra, slots.size)
    counts = np.full(n_rows, k_min, dtype=np.int64)
    if take <= 0:
        return counts, None
    rows, cols = np.divmod(np.arange(slots.size), slots.shape[1])
    flat = slots.ravel()
    order = np.lexsort((cols, rows, -flat))[:take]
    counts += np.bincount(rows[order], minlength=n_rows)
    return counts, float(flat[order[-1]])


def expected_kept(p: np.ndarray, k: np.ndarray, cap: int) -> float:
    """sum_i E[min(C_i, cap)] with C_i ~ Binomial(k_i, p_i): the objective greedy maximises."""
    gains = marginal_gains(p, int(np.max(k, initial=1)), cap)
    taken = np.arange(gains.shape[1])[None, :] < np.asarray(k)[:, None]
    return float((gains * taken).sum())


def _uniform(n_prompts: int, budget: int, k_min: int, k_max: int, seed: int) -> np.ndarray:
    """budget // N each, the remainder one more each for the first prompts of a seeded permutation."""
    base, rest = divmod(budget, n_prompts)
    k = np.full(n_prompts, base, dtype=np.int64)
    k[np.random.default_rng(seed).permutation(n_prompts)[:rest]] += 1
    return np.clip(k, k_min, k_max)


def budget_of(cfg: AllocationConfig, n_prompts: int, k: int) -> int:
    """Samples of the iteration, hint pass included: allocation.budget, else (and when off) prompts x k.
    A hint pass with allocation on takes its reserve, round(hints.reserve x budget), off the first pass."""
    return (cfg.budget or n_prompts * k) if cfg.enabled else n_prompts * k


def plan_allocation(pool: pl.DataFrame, counts: pl.DataFrame | None, cfg: AllocationConfig, *, k: int, cap: int,
                    iteration: str, seed: int, prev_iteration: str | None = None, reserve: int = 0) -> pl.DataFrame:
    """The ALLOCATION rows of one iteration: first-pass samples `k` per pool prompt and why.

    Off (`cfg.enabled` false): `k` (generate.k) each, reason `uniform`. On: the budget (cfg.budget,
    else pool prompts x k) minus `reserve` (kept for a hint pass) is shared. Without history (the
    workspace's first iteration, or an empty table) it is shared evenly, the remainder to prompts
    drawn with `seed`; with it, greedily by marginal gain (module docstring). `reason`: uniform,
    history (p_hat from the prompt's own samples), prior (never sampled: its difficulty's rate), or
    k_min / k_max where a bound decided. `k_hint` and the hint columns are left for the hint pass."""
    pool = pool.select("prompt_id", pl.col("difficulty").cast(pl.Int32)).sort("prompt_id")
    n_prompts = pool.height
    budget = budget_of(cfg, n_prompts, k)
    first = budget - reserve
    if cfg.enabled and first < n_prompts * cfg.k_min:
        raise ConfigError(f"is {budget} ({reserve} of it reserved for the hint pass), too few for {n_prompts} pool "
                          f"prompts at allocation.k_min {cfg.k_min} each.", field="allocation.budget",
                          fix=f"raise allocation.budget to at least {n_prompts * cfg.k_min + reserve}, or lower "
                              "allocation.k_min or pool.prompts_per_iteration.")
    base = pool.with_columns(iteration=pl.lit(iteration), budget=pl.lit(budget, pl.Int64))
    history = cfg.enabled and counts is not None and counts.filter(pl.col("n") > 0).height > 0
    if n_prompts == 0 or not history:
        ks = np.full(n_prompts, k, dtype=np.int64) if not cfg.enabled or n_prompts == 0 else \
            _uniform(n_prompts, first, cfg.k_min, cfg.k_max, derive_seed(seed, iteration, "allocate"))
        return _rows(base.with_columns(k=pl.Series(ks, dtype=pl.Int32), reason=pl.lit("uniform")))
    est = estimate_p(pool, counts, cfg)
    p = est["p_hat"].to_numpy()
    ks, cutoff = greedy_counts(marginal_gains(p, cfg.k_max, cap), cfg.k_min, first - n_prompts * cfg.k_min)
    reason = (pl.when(pl.col("k") == cfg.k_min).then(pl.lit("k_min"))
              .when(pl.col("k") == cfg.k_max).then(pl.lit("k_max"))
              .when(pl.col("prev_n").is_not_null()).then(pl.lit("history"))
              .otherwise(pl.lit("prior")))
    planned = base.join(est.drop("difficulty"), on="prompt_id", how="left").with_columns(
        k=pl.Series(ks, dtype=pl.Int32), gain_cutoff=pl.lit(cutoff, pl.Float64),
        prev_iteration=pl.when(pl.col("prev_n").is_not_null()).then(pl.lit(prev_iteration)))
    return _rows(planned.with_columns(reason=reason))


def _rows(df: pl.DataFrame) -> pl.DataFrame:
    """Every ALLOCATION column, absent ones null (k_hint 0: no hint pass yet)."""
    fill = {c: (pl.lit(0, t) if c == "k_hint" else pl.lit(None, t)) for c, t in ALLOCATION.columns.items()
            if c not in df.columns}
    return df.with_columns(**fill).select([pl.col(c).cast(t) for c, t in ALLOCATION.columns.items()]) \
        .sort(list(ALLOCATION.key))


def record_hint_pass(plan: pl.DataFrame, first_pass: pl.DataFrame, targets: pl.DataFrame,
                     k_hint: int) -> pl.DataFrame:
    """The plan with the hint pass filled in: `first_pass_correct` (correct first-pass samples per prompt,
    from `first_pass`'s prompt_id and correct columns) for every prompt, and `k_hint`, `hint_kind` and
    `hint_reason` for the prompts in `targets` (the hint pass's requests)."""
    correct = first_pass.group_by("prompt_id").agg(
        first_pass_correct=pl.col("correct").fill_null(False).sum().cast(pl.Int32))
    hinted = targets.select("prompt_id", "hint_kind", "hint_reason", k_hint=pl.lit(k_hint, pl.Int32))
    filled = (plan.drop("first_pass_correct", "hint_kind", "hint_reason", "k_hint")
              .join(correct, on="prompt_id", how="left").join(hinted, on="prompt_id", how="left")
              .with_columns(pl.col("k_hint").fill_null(0), pl.col("first_pass_correct").fill_null(0)))
    return _rows(filled)


def with_n(pool: pl.DataFrame, plan: pl.DataFrame) -> pl.DataFrame:
    """The pool prompts with their planned first-pass sample count as the backends' `n` column."""
    return pool.join(plan.select("prompt_id", n=pl.col("k")), on="prompt_id", how="left")


def budget_metrics(plan: pl.DataFrame, n_first_pass: int, n_hint_pass: int = 0) -> dict[str, float | int]:
    """metrics.json keys of adaptive K: what the budget was, how it was spent and on whom
    (budget_share_hard: the share of first-pass samples given to prompts with p_hat < 0.25)."""
    k = plan["k"].to_numpy()
    hard = (plan["p_hat"].fill_null(1.0).to_numpy() < 0.25) if plan.height else np.zeros(0, bool)
    budget = int(plan["budget"][0]) if plan.height else 0
    return {"budget": budget, "samples_first_pass": int(n_first_pass), "samples_hint_pass": int(n_hint_pass),
            "budget_unspent": budget - int(n_first_pass) - int(n_hint_pass),
            "k_min_used": int(k.min()) if k.size else 0, "k_max_used": int(k.max()) if k.size else 0,
            "k_mean": round(float(k.mean()), 6) if k.size else 0.0,
            "budget_share_hard": round(float(k[hard].sum()) / float(k.sum()), 6) if k.sum() else 0.0}


def allocation_metrics(plan: pl.DataFrame, scored: pl.DataFrame, k: int) -> dict[str, float | int]:
    """metrics.json keys of an iteration with adaptive K on: the budget's use (`budget_metrics`; first-pass
    samples are the `self` ones) and how many prompts have the generate.k samples pass@k averages over
    (`pass@{k}_prompts`; with variable n it is over prompts with n >= k, which the allocation decides)."""
    own = scored.filter(pl.col("origin") == "self") if "origin" in scored.columns else scored
    per = own.group_by("prompt_id").len()
    return budget_metrics(plan, own.height, scored.height - own.height) | {
        f"pass@{k}_prompts": int((per["len"] >= k).sum()) if per.height else 0}


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g}"


def explain(row: dict, *, enabled: bool = True, prior_strength: float | None = None) -> str:
    """One ALLOCATION row as a sentence: how many samples the prompt got and the evidence behind it,
    e.g. "32 samples (the k_max bound): p_hat 0.06 from 0/8 correct at 0002, shrunk towards the prior
    0.31 of difficulty 4 (strength 4); budget 8000, marginal-gain cutoff 0.041"."""
    k, reason = row["k"], row["reason"]
    head = f"{k} sample{'s' if k != 1 else ''}"
    if reason == "uniform":
        text = f"{head}: generate.k for every prompt (allocation off)" if not enabled else \
            f"{head}: the budget of {row['budget']} shared evenly (no earlier iteration to learn from)"
    else:
        bound = {"k_min": " (the k_min floor)", "k_max": " (the k_max bound)"}.get(reason, "")
        level = (f"difficulty {row['difficulty']}" if row.get("prior_from") == "difficulty"
                 else "all prompts" if row.get("prior_from") == "overall" else "the prior")
        strength = f" (strength {prior_strength:g})" if prior_strength is not None else ""
        if row.get("prev_n") is not None:
            evidence = (f"p_hat {_num(row['p_hat'])} from {row['prev_c']}/{row['prev_n']} correct at "
                        f"{row['prev_iteration']}, shrunk towards the rate {_num(row['prior_p'])} of {level}{strength}")
        else:
            evidence = (f"p_hat {_num(row['p_hat'])}, the rate of {level} (not sampled at the previous iteration)")
        text = f"{head}{bound}: {evidence}; budget {row['budget']}, marginal-gain cutoff {_num(row['gain_cutoff'])}"
    if row.get("k_hint"):
        kind = f" ({row['hint_kind']})" if row.get("hint_kind") else ""
        why = f": {row['hint_reason']}" if row.get("hint_reason") else ""
        text += f"; then {row['k_hint']} hinted sample{'s' if row['k_hint'] != 1 else ''}{kind}{why}"
    return text
