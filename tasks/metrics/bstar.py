"""B-STaR iteration metrics (exploration, exploitation, balance, collapse) over a SCORED table.

Why vectorised: an iteration scores ~10^6 samples and the metrics run every iteration (and the
calibration sweep on top), so everything is column-at-a-time Polars + numpy; there is no
per-row or per-prompt Python loop. Means over an empty set are reported as 0.0 so the output is
always plain JSON (DVC metrics); only `hard_prompts_solved` is omitted when undefined.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.config.recipe import SelectConfig
from tasks.metrics.passk import pass_at_k
from tasks.stages.select import dedup_key, with_reference

NGRAM = 4
EQUATION_KEY = dedup_key(SelectConfig.model_validate({"dedup": "equations"}))
_NEG_INF = float("-inf")
# odd 64-bit multipliers: an n-gram's hash is XOR_j(hash(token_j) * _MIX[j]) (wrapping u64)
_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9)


def prepare_scored(scored: pl.DataFrame) -> pl.DataFrame:
    """Sort by (prompt_id, sample_idx) so in-group `arg_max` ties resolve to the lowest sample_idx,
    and add `_s`: the score with NaN/null mapped to -inf (never above any threshold), and `_pc`:
    a dense integer prompt code (0..P-1, in prompt_id order) for cheap numeric sorts."""
    return scored.sort(["prompt_id", "sample_idx"]).with_columns(
        _s=pl.col("score").cast(pl.Float64).fill_nan(_NEG_INF).fill_null(_NEG_INF),
        _pc=(pl.col("prompt_id") != pl.col("prompt_id").shift(1)).fill_null(True).cum_sum().cast(pl.Int64) - 1)


def _ngram_hash(n: int) -> pl.Expr:
    expr = pl.col("_h") * _MIX[0]
    for j in range(1, n):
        expr = expr ^ (pl.col("_h").shift(-j) * _MIX[j])
    return expr


def repetition_rates(text: pl.Series, n: int = NGRAM) -> np.ndarray:
    """Per-sample repetition rate. Tokens: the text split on ASCII whitespace (space, \\t, \\n, \\r,
    \\f, \\v), empty tokens dropped. Of the m = max(tokens - n + 1, 0) word n-grams of a sample, the
    rate is the share that repeat an earlier n-gram of the same sample, 1 - distinct/m (0.0 when
    m == 0). N-grams are compared by 64-bit hash (collisions are negligible at these sizes).

    Why: the collapse signal of self-training is a sample looping on itself; this measures it
    without a tokenizer and stays vectorised (explode + shifted token hashes + one group_by).
    """
    if not 1 <= n <= len(_MIX):
        raise ValueError(f"n-gram size must be in 1..{len(_MIX)}")
    height = text.len()
    out = np.zeros(height, dtype=np.float64)
    if height == 0:
        return out
    grams = (pl.DataFrame({"text": text}).lazy().with_row_index("_r")
             .select("_r", _h=pl.col("text").str.replace_all(r"[\t\n\r\f\v]", " ").str.split(" "))
             .explode("_h").filter(pl.col("_h").str.len_bytes() > 0)
             .with_columns(pl.col("_h").hash(0))
             .with_columns(_g=_ngram_hash(n))
             .filter(pl.col("_r").shift(-(n - 1)) == pl.col("_r"))
             .group_by("_r").agg(m=pl.len(), u=pl.col("_g").n_unique())
             .collect())
    rows = grams["_r"].to_numpy().astype(np.int64)
    out[rows] = 1.0 - grams["u"].to_numpy() / grams["m"].to_numpy()
    return out


def _reward_rank(scored: pl.DataFrame) -> np.ndarray:
    col = ("reward" if "reward" in scored.columns and scored["reward"].null_count() < scored.height
           else "score")
    return scored[col].cast(pl.Float64).fill_nan(_NEG_INF).fill_null(_NEG_INF).to_numpy()


STATS_SCHEMA = {"prompt_id": pl.String, "n": pl.Int64, "c": pl.Int64, "distinct_correct": pl.Int64,
                "distinct_correct_eq": pl.Int64, "truncated": pl.Int64, "tokens": pl.Int64,
                "best_reward_correct": pl.Boolean, "repetition": pl.Float64}


def _prompt_stats(df: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """prompt_stats from a prepared table and its ["_pc"] dedup groups. Row i is prompt code i, so
    per-prompt sums are `np.bincount` over the codes and per-prompt maxima `reduceat` over the
    (sorted) prompt blocks."""
    if df.height == 0:
        return pl.DataFrame(schema=STATS_SCHEMA)
    pc = df["_pc"].to_numpy()
    size = int(pc[-1]) + 1
    starts = np.flatnonzero(np.r_[True, pc[1:] != pc[:-1]])
    n = np.bincount(pc, minlength=size)
    correct = df["correct"].fill_null(False).to_numpy()
    rank = _reward_rank(df)
    is_top = rank == np.maximum.reduceat(rank, starts)[pc]  # rows are sorted by sample_idx in a prompt
    top = np.minimum.reduceat(np.where(is_top, np.arange(df.height), df.height), starts)
    # Repetition and equation chains depend on the text only, so compute them once per distinct
    # (prompt, text) group; the equation regex runs on correct groups only (others are null).
    gpc = groups["_pc"].to_numpy()
    weight = groups["n_copies"].to_numpy() * repetition_rates(groups["text"])
    good = groups.filter(pl.col("n_correct") > 0)
    eq = good.select("_pc", _eq=EQUATION_KEY).unique()["_pc"].to_numpy()
    truncated = (df["finish_reason"] == "length").fill_null(False).to_numpy()

    def count(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(codes, weights=weights, minlength=size).round().astype(np.int64)

    return pl.DataFrame({
        "prompt_id": df["prompt_id"].gather(starts),
        "n": n,
        "c": count(pc, correct),
        "distinct_correct": count(good["_pc"].to_numpy()),
        "distinct_correct_eq": count(eq),
        "truncated": count(pc, truncated),
        "tokens": count(pc, df["n_tokens"].fill_null(0).cast(pl.Float64).to_numpy()),
        "best_reward_correct": correct[top],
        "repetition": np.bincount(gpc, weights=weight, minlength=size) / n,
    }, schema=STATS_SCHEMA)


def prompt_stats(scored: pl.DataFrame) -> pl.DataFrame:
    """One row per prompt_id (sorted): n samples, c correct, distinct_correct (unique correct texts),
    distinct_correct_eq (unique correct equation chains, the `select` equation dedup key; a sample
    with no equation has the empty chain), truncated (finish_reason == "length"), tokens (sum),
    best_reward_correct (is the top-`reward` sample correct? ties -> lowest sample_idx; when the
    table's reward column is entirely null, `score` ranks instead; null/NaN rank last),
    repetition (mean per-sample repetition rate, see `repetition_rates`)."""
    df = prepare_scored(scored)
    return _prompt_stats(df, dedup_groups(df, ["_pc"]))


def dedup_groups(scored: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Exact-text dedup groups per `by` (e.g. prompt_id): the group's score is its best copy's
    (NaN/null -> -inf) and its correctness is that copy's (ties -> lowest sample_idx), the copy
    `select` would keep. Also n_copies and n_correct copies. Expects `prepare_scored` input."""
    return scored.group_by([*by, "text"]).agg(
        score=pl.col("_s").max(),
        correct=pl.col("correct").get(pl.col("_s").arg_max()),
        n_copies=pl.len().cast(pl.Int64),
        n_correct=pl.col("correct").sum().cast(pl.Int64),
    )


def balance_values(c_sel: np.ndarray, n_sel: np.ndarray, n_star: int) -> np.ndarray:
    """B-STaR balance per prompt: min(c/n*, 1) * c/n over distinct selected samples; 0 when n == 0."""
    c = np.asarray(c_sel, dtype=np.float64)
    n = np.asarray(n_sel, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, np.minimum(c / n_star, 1.0) * (c / np.maximum(n, 1.0)), 0.0)


def pass_at_k_s(n: np.ndarray, c: np.ndarray, k: int, s: int) -> np.ndarray:
    """Unbiased P(at least s correct among k drawn without replacement from n with c correct):
    the hypergeometric tail sum_{j>=s} C(c,j) C(n-c,k-j) / C(n,k). When n == k it is exactly the
    indicator c >= s (the plain fraction once averaged). NaN where n < k."""
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    ok = n >= k
    if s <= 0:
        return np.where(ok, 1.0, np.nan)
    if s > k or n.size == 0:
        return np.where(ok, 0.0, np.nan)
    lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, int(n.max()) + 1, dtype=np.float64)))])

    def log_comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.maximum(a, 0), np.clip(b, 0, np.maximum(a, 0))
        return lf[a] - lf[b] - lf[a - b]

    j = np.arange(s, k + 1, dtype=np.int64)[None, :]
    nn, cc = n[:, None], c[:, None]
    valid = (j <= cc) & (k - j <= nn - cc) & ok[:, None]
    logp = log_comb(cc, j) + log_comb(nn - cc, k - j) - log_comb(nn, np.full_like(nn, k))
    p = np.where(valid, np.exp(np.where(valid, logp, 0.0)), 0.0).sum(axis=1)
    return np.where(ok, np.minimum(p, 1.0), np.nan)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else 0.0


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def iteration_metrics(scored: pl.DataFrame, selected: pl.DataFrame | None, *, k: int,
                      s_values: tuple[int, ...] = (2, 4), n_star: int = 8, threshold: float,
                      baseline: dict | None = None, hard_prompt_ids: list[str] | None = None,
                      digits: int | None = 6, average_over: str = "all", reference: pl.DataFrame | None = None,
                      reference_score: float = 1.0) -> dict[str, float | int]:
    """Flat, JSON-ready metrics dict (floats rounded to 6 places) for one iteration.

    Prompts are those present in `scored` (a prompt with no samples has no row, so it counts
    nowhere). pass@k and pass@k-S average over prompts with n >= k (unbiased estimators, see
    `pass_at_k_s`); correct_hist_j is over prompts with n == k exactly. best_of_k: share of
    prompts whose top-reward sample is correct. reward@k-S: share of prompts with at least s
    samples (all of the prompt's samples, K in normal use; no dedup) scoring > threshold.
    balance_score: B-STaR bs over exact-deduplicated samples scoring > threshold, averaged over
    all prompts (`average_over="selected"`: over prompts with a selected sample; `reference`
    (prompt_id, text): each prompt's reference solution joins its candidates as a correct sample
    scoring `reference_score`, for the balance score only, see `with_reference`).
    repetition_rate is the mean over samples. Drift keys need `baseline` (iteration 0's dict),
    hard_prompts_solved needs `hard_prompt_ids`, n_selected and
    query_uniformity (1 - population std/mean of selected samples per prompt with >= 1; 0.0
    when nothing is selected) need `selected`. `digits=None` skips rounding (for exact checks).
    """
    df = prepare_scored(scored)
    groups = dedup_groups(df, ["_pc"])
    ps = _prompt_stats(df, groups)
    n, c = ps["n"].to_numpy(), ps["c"].to_numpy()
    total_n, total_c = int(n.sum()), int(c.sum())
    elig = n >= k
    full = n == k
    out: dict[str, float | int] = {"n_prompts": ps.height, "n_samples": total_n}
    out["pass@1"] = _mean(c / np.maximum(n, 1))
    out[f"pass@{k}"] = _mean(pass_at_k(n[elig], c[elig], k))
    for s in s_values:
        out[f"pass@{k}-S{s}"] = _mean(pass_at_k_s(n[elig], c[elig], k, s))
    out["coverage"] = _mean(c > 0)
    hist = np.bincount(c[full], minlength=k + 1)[: k + 1] / max(int(full.sum()), 1)
    out.update({f"correct_hist_{j}": float(hist[j]) for j in range(k + 1)})
    out["distinct_correct_ratio"] = _ratio(int(ps["distinct_correct"].sum()), total_c)
    out["distinct_correct_ratio_eq"] = _ratio(int(ps["distinct_correct_eq"].sum()), total_c)
    out["best_of_k"] = _mean(ps["best_reward_correct"].fill_null(False).to_numpy())
    above = np.bincount(df["_pc"].to_numpy(), weights=df["_s"].to_numpy() > threshold, minlength=ps.height)
    for s in s_values:
        out[f"reward@{k}-S{s}"] = _mean(above >= s)
    out["gen_ver_gap"] = out["best_of_k"] - out["pass@1"]
    bal_groups = groups if reference is None else dedup_groups(
        prepare_scored(with_reference(scored, reference, reference_score)), ["_pc"])
    out["balance_score"] = _balance(bal_groups, threshold, n_star, ps.height, average_over)
    out["repetition_rate"] = _ratio(float((ps["repetition"].fill_null(0.0).to_numpy() * n).sum()), total_n)
    out["mean_tokens"] = _ratio(int(ps["tokens"].sum()), total_n)
    out["truncation_rate"] = _ratio(int(ps["truncated"].sum()), total_n)
    if baseline:
        if baseline.get("mean_tokens"):
            out["length_drift"] = out["mean_tokens"] / float(baseline["mean_tokens"]) - 1.0
        if "truncation_rate" in baseline:
            out["truncation_drift"] = out["truncation_rate"] - float(baseline["truncation_rate"])
    if hard_prompt_ids is not None:
        hard = ps.filter(pl.col("prompt_id").is_in(list(hard_prompt_ids)))
        if hard.height:
            out["hard_prompts_solved"] = _mean(hard["c"].to_numpy() > 0)
    if selected is not None:
        out["n_selected"] = selected.height
        per = selected.group_by("prompt_id").len()["len"].to_numpy().astype(np.float64)
        out["query_uniformity"] = 1.0 - float(per.std()) / float(per.mean()) if per.size else 0.0
    return {key: (v if isinstance(v, int) or digits is None else round(float(v), digits))
            for key, v in out.items()}


def balance_score(scored: pl.DataFrame, threshold: float, *, n_star: int, average_over: str = "all",
                  reference: pl.DataFrame | None = None, reference_score: float = 1.0) -> float:
    """Mean over all prompts (or, `average_over="selected"`, over prompts with a selected sample) of
    B-STaR bs at one threshold (selection: score > threshold, exact-text dedup as in `dedup_groups`;
    `reference` rows injected by `with_reference`). 0.0 for an empty table or nothing to average."""
    if reference is not None:
        scored = with_reference(scored, reference, reference_score)
    df = prepare_scored(scored)
    return _balance(dedup_groups(df, ["_pc"]), threshold, n_star, df["_pc"].n_unique(), average_over)


def _balance(groups: pl.DataFrame, threshold: float, n_star: int, n_prompts: int, average_over: str = "all"
             ) -> float:
    if n_prompts == 0:
        return 0.0
    pc = groups["_pc"].to_numpy()
    sel = groups["score"].to_numpy() > threshold
    n_sel = np.bincount(pc, weights=sel, minlength=n_prompts)
    c_sel = np.bincount(pc, weights=sel & groups["correct"].to_numpy(), minlength=n_prompts)
    values = balance_values(c_sel, n_sel, n_star)
    # the reference code's mean runs over the queries of the selected set only
    return _mean(values[n_sel > 0] if average_over == "selected" else values)


def hard_prompts(scored_iteration0: pl.DataFrame, cutoff: float = 0.25) -> list[str]:
    """Prompt ids whose iteration-0 pass@1 (c/n) is below `cutoff`, sorted (tail-narrowing probe); over
    the first pass's samples, never hinted ones."""
    per = self_rows(scored_iteration0).group_by("prompt_id").agg(p=pl.col("correct").cast(pl.Float64).mean())
    return sorted(per.filter(pl.col("p") < cutoff)["prompt_id"].to_list())


# ---------------------------------------------------------------- the hard tail by origin (hint pass)
TAIL_ORIGINS = ("self", "rationalized", "hinted")  # origins of samples; `reference` appears in selected only


def self_rows(scored: pl.DataFrame) -> pl.DataFrame:
    """The first pass's samples: every row of a table without an origin column (hint pass off). The
    exploration metrics describe what the policy finds on its own, so they run over these."""
    return scored.filter(pl.col("origin") == "self") if "origin" in scored.columns else scored


def tail_by_origin(scored: pl.DataFrame, selected: pl.DataFrame | None, *, hard_prompt_ids: list[str],
                   difficulty: pl.DataFrame | None = None) -> dict[str, float | int]:
    """Who solves the hard tail when the hint pass is on (emitted only then; the keys are fixed per origin).

    Per origin o: n_samples_o, selected_o (selected rows), hard_prompts_solved_o (share of the pool's hard
    prompts, `hard_prompt_ids` present in `scored`, with a correct sample of origin o; omitted when none is
    in the pool) and hard_prompts_selected_o (with a selected example of origin o); hard_prompts_solved_any.
    hint_prompts: prompts sampled with a hint; hint_rescued: share of them with a correct hinted sample.
    solved_d{d}_o and solved_d{d}_any: share of the pool's prompts of difficulty d (`difficulty`:
    prompt_id, difficulty) with a correct sample of origin o, so the tail shows where `hard_prompts`
    (defined by the first iteration's pool) does not reach."""
    s = scored.select("prompt_id", pl.col("correct").fill_null(False),
                      pl.col("origin") if "origin" in scored.columns else pl.lit("self").alias("origin"))
    sel = (selected.select("prompt_id", "origin") if selected is not None and "origin" in selected.columns
           else pl.DataFrame(schema={"prompt_id": pl.String, "origin": pl.String}))
    sel_origins = [*TAIL_ORIGINS, *(["reference"] if (sel["origin"] == "reference").any() else [])]
    per = s.group_by("prompt_id").agg(
        *[(pl.col("correct") & (pl.col("origin") == o)).any().alias(f"solved_{o}") for o in TAIL_ORIGINS],
        solved_any=pl.col("correct").any(), hinted=(pl.col("origin") != "self").any(),
        rescued=(pl.col("correct") & (pl.col("origin") != "self")).any())
    chosen = sel.group_by("prompt_id").agg(*[(pl.col("origin") == o).any().alias(f"selected_{o}")
                                             for o in sel_origins])
    per = per.join(chosen, on="prompt_id", how="left").with_columns(
        pl.col(f"selected_{o}").fill_null(False) for o in sel_origins)
    counts = s["origin"].value_counts()
    n_of = dict(zip(counts["origin"].to_list(), counts["count"].to_list()))
    sel_counts = sel["origin"].value_counts()
    sel_of = dict(zip(sel_counts["origin"].to_list(), sel_counts["count"].to_list()))
    out: dict[str, float | int] = {}
    for o in TAIL_ORIGINS:
        out[f"n_samples_{o}"] = int(n_of.get(o, 0))
    for o in sel_origins:
        out[f"selected_{o}"] = int(sel_of.get(o, 0))
    hard = per.filter(pl.col("prompt_id").is_in(list(hard_prompt_ids)))
    if hard.height:
        share = hard.select(pl.exclude("prompt_id").cast(pl.Float64).mean()).row(0, named=True)
        out |= {f"hard_prompts_solved_{o}": share[f"solved_{o}"] for o in TAIL_ORIGINS}
        out["hard_prompts_solved_any"] = share["solved_any"]
        out |= {f"hard_prompts_selected_{o}": share[f"selected_{o}"] for o in sel_origins}
    hinted = per.filter(pl.col("hinted"))
    out["hint_prompts"] = hinted.height
    out["hint_rescued"] = _mean(hinted["rescued"].to_numpy())
    if difficulty is not None:
        cols = [*(f"solved_{o}" for o in TAIL_ORIGINS), "solved_any"]
        by_d = (per.join(difficulty.select("prompt_id", "difficulty"), on="prompt_id", how="inner")
                .filter(pl.col("difficulty").is_not_null())
                .group_by("difficulty").agg(pl.col(cols).cast(pl.Float64).mean()).sort("difficulty"))
        for row in by_d.iter_rows(named=True):  # one row per difficulty level, a handful
            d = int(row["difficulty"])
            out |= {f"solved_d{d}_{c.removeprefix('solved_')}": row[c] for c in cols}
    return {key: v if isinstance(v, int) else round(float(v), 6) for key, v in out.items()}
