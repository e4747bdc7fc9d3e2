"""B-STaR auto-balancing: the balance score for every (temperature, threshold) pair in one sweep.

Why a sweep rather than a loop: the probe set is scored once per temperature, and the grid has
~200 thresholds; re-filtering the table per threshold costs O(thresholds x samples). Instead,
each exact-dedup group (see `tasks.metrics.bstar.dedup_groups`) is placed in the sorted threshold
grid with one `searchsorted`: a group with score s is selected at exactly the thresholds t < s,
i.e. at grid indices [0, idx). Within a prompt, groups sorted by idx descending make the selected
set at index t the top-m groups for t in [idx_(m+1), idx_(m)), where the prompt's balance is the
constant v_m = min(C_m/n*, 1) * C_m/m (C_m: correct among the top m). Adding v_m on that index
range through a difference array, then a cumulative sum along the grid, gives the sum of balance
scores over prompts for every threshold at once: O(samples + temperatures x thresholds).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.data.schema import CALIBRATION, CALIBRATION_OPTIONS
from tasks.metrics.bstar import balance_values, dedup_groups, prepare_scored, with_reference
from tasks.metrics.passk import pass_at_k

TIE_DECIMALS = 12


def _per_temperature(groups: pl.DataFrame, temps: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Per temperature: prompt count, mean pass@k over prompts with n >= k (NaN if none), and
    distinct-correct ratio (unique correct texts / correct samples; 0.0 when none correct)."""
    pp = groups.group_by(["temperature", "_pc"]).agg(
        n=pl.col("n_copies").sum(), c=pl.col("n_correct").sum(), d=(pl.col("n_correct") > 0).sum()
    ).sort(["temperature", "_pc"])  # a fixed order for the float sums
    ti = np.searchsorted(temps, pp["temperature"].to_numpy())
    n, c, d = (pp[x].to_numpy().astype(np.int64) for x in ("n", "c", "d"))
    nt = temps.size
    n_prompts = np.bincount(ti, minlength=nt)
    elig = n >= k
    pk = pass_at_k(n[elig], c[elig], k) if elig.any() else np.zeros(0)
    pk_sum = np.bincount(ti[elig], weights=pk, minlength=nt)
    pk_cnt = np.bincount(ti[elig], minlength=nt)
    with np.errstate(divide="ignore", invalid="ignore"):
        pass_k = np.where(pk_cnt > 0, pk_sum / np.maximum(pk_cnt, 1), np.nan)
        c_sum = np.bincount(ti, weights=c, minlength=nt)
        distinct = np.where(c_sum > 0, np.bincount(ti, weights=d, minlength=nt) / np.maximum(c_sum, 1), 0.0)
    return n_prompts, pass_k, distinct


def _sweep(groups: pl.DataFrame, temps: np.ndarray, grid: np.ndarray, n_star: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (temperature, threshold): sum over prompts of the balance score, distinct selected count,
    and the number of prompts with at least one selected group."""
    nt, t = temps.size, grid.size
    width = t + 1
    ti = np.searchsorted(temps, groups["temperature"].to_numpy())
    pc = groups["_pc"].to_numpy()
    idx = np.searchsorted(grid, groups["score"].to_numpy(), side="left")  # selected at grid[:idx]
    prompt = ti * (int(pc.max()) + 1) + pc
    order = np.argsort(prompt * width + (t - idx), kind="stable")  # by prompt, then idx descending
    prompt, idx, ti = prompt[order], idx[order], ti[order]
    correct = groups["correct"].to_numpy()[order].astype(np.int64)
    pos = np.arange(prompt.size)
    first = np.r_[True, prompt[1:] != prompt[:-1]]
    last = np.r_[prompt[1:] != prompt[:-1], True]
    start = np.maximum.accumulate(np.where(first, pos, 0))
    m = pos - start + 1  # groups taken so far in this prompt
    cum = np.cumsum(correct)
    cc = cum - cum[start] + correct[start]  # correct among them
    nxt = np.where(last, 0, np.r_[idx[1:], 0])  # idx of the next group in this prompt
    v = balance_values(cc, m, n_star)  # the prompt's balance on grid indices [nxt, idx)
    base = ti * width
    diff = (np.bincount(base + nxt, weights=v, minlength=nt * width)
            - np.bincount(base + idx, weights=v, minlength=nt * width)).reshape(nt, width)
    bs_sum = np.cumsum(diff, axis=1)[:, :t]
    counts = np.bincount(base + idx, minlength=nt * width).reshape(nt, width)
    at_or_above = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]  # groups with idx >= j
    # a prompt has a selection at j iff its highest idx (its first row here) is > j
    tops = np.bincount(base[first] + idx[first], minlength=nt * width).reshape(nt, width)
    prompts_above = np.cumsum(tops[:, ::-1], axis=1)[:, ::-1]
    return bs_sum, at_or_above[:, 1:], prompts_above[:, 1:]  # idx > j  <=>  score > grid[j]


def calibration_grid(probe_scored: pl.DataFrame, thresholds: list[float], *, n_star: int, k: int,
                     average_over: str = "all", reference: pl.DataFrame | None = None,
                     reference_score: float = 1.0, record: dict[str, str] | None = None,
                     tie_lowest: bool = False) -> pl.DataFrame:
    """CALIBRATION table: one row per (temperature, threshold), sorted by both.

    balance_score is the B-STaR bs averaged over all of that temperature's prompts (selection:
    score > threshold, exact-text dedup; same definition as `iteration_metrics`), rounded to 12
    decimals so equal scores compare equal. pass_at_k and distinct_ratio describe the
    temperature's samples (null pass_at_k when no prompt has n >= k). n_selected counts distinct
    selected samples. `chosen` marks exactly one row: the highest balance score; ties go to the
    lower temperature (less drift), then to the highest threshold (stricter: the probe cannot tell
    tied thresholds apart, and the larger pool's samples between them are kept out), or with
    `tie_lowest` to the lowest (the B-STaR reference code's rule).
    An empty probe table gives an empty grid.

    The B-STaR reference code's options: `average_over="selected"` averages over the prompts with at
    least one selected sample (0.0 where none has); `reference` (prompt_id, text) injects each prompt's
    reference solution into its candidates at every temperature (`tasks.metrics.bstar.with_reference`),
    for the balance score and n_selected only (pass_at_k and distinct_ratio describe the samples).
    `record` (set and the three options) gives the CALIBRATION_OPTIONS table: those values plus
    n_prompts and n_prompts_selected per row.
    """
    grid = np.unique(np.asarray(thresholds, dtype=np.float64))
    df = prepare_scored(probe_scored.with_columns(pl.col("temperature").cast(pl.Float64)))
    temps = np.unique(df["temperature"].to_numpy())
    if df.height == 0 or grid.size == 0:
        return pl.DataFrame(schema=(CALIBRATION if record is None else CALIBRATION_OPTIONS).schema)
    # sorted: group_by order is arbitrary, and the float sums below must not depend on it (bytes)
    groups = dedup_groups(df, ["temperature", "_pc"]).sort(["temperature", "_pc", "text"])
    n_prompts, pass_k, distinct = _per_temperature(groups, temps, k)
    if reference is not None:  # the same prompts and temperatures, so the same codes
        groups = dedup_groups(prepare_scored(with_reference(df.drop("_s", "_pc"), reference, reference_score,
                                                            ("temperature",))), ["temperature", "_pc"]
                              ).sort(["temperature", "_pc", "text"])
    bs_sum, n_selected, n_prompts_selected = _sweep(groups, temps, grid, n_star)
    if average_over == "selected":
        with np.errstate(divide="ignore", invalid="ignore"):
            bs = np.where(n_prompts_selected > 0, bs_sum / np.maximum(n_prompts_selected, 1), 0.0)
    else:
        bs = bs_sum / n_prompts[:, None]
    bs = np.round(bs, TIE_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    nt, t = temps.size, grid.size
    temp_col, thr_col = np.repeat(temps, t), np.tile(grid, nt)
    bs_col = bs.ravel()
    best = np.lexsort((thr_col if tie_lowest else -thr_col, temp_col, -bs_col))[0]
    chosen = np.zeros(nt * t, dtype=bool)
    chosen[best] = True
    out = pl.DataFrame({
        "temperature": temp_col, "threshold": thr_col, "balance_score": bs_col,
        "pass_at_k": np.repeat(pass_k, t), "distinct_ratio": np.repeat(distinct, t),
        "n_selected": n_selected.ravel().astype(np.int64), "chosen": chosen,
    }, schema=CALIBRATION.schema).with_columns(pl.col("pass_at_k").fill_nan(None))
    if record is None:
        return out
    return out.with_columns(
        *(pl.lit(record[c], dtype=pl.String).alias(c) for c in ("set", "average_over", "threshold_from",
                                                                "inject_reference")),
        n_prompts=np.repeat(n_prompts, t).astype(np.int64), n_prompts_selected=n_prompts_selected.ravel()
        .astype(np.int64)).select(list(CALIBRATION_OPTIONS.columns))


def choose(grid: pl.DataFrame) -> dict[str, float]:
    """The chosen (temperature, threshold) and its balance score; raises on a grid with none chosen."""
    row = grid.filter(pl.col("chosen"))
    if row.height != 1:
        raise ValueError(f"calibration grid must have exactly one chosen row, found {row.height}")
    r = row.row(0, named=True)
    return {"temperature": float(r["temperature"]), "threshold": float(r["threshold"]),
            "balance_score": float(r["balance_score"]) if r["balance_score"] is not None else float("nan")}


def ranked(grid: pl.DataFrame, n: int, tie_lowest: bool) -> list[dict[str, float | int | None]]:
    """The grid's top `n` cells in the order the choice ranks them (the first is the chosen one): balance
    score, temperature, threshold and n_selected of each."""
    order = grid.sort(["balance_score", "temperature", "threshold"], descending=[True, False, not tie_lowest],
                      nulls_last=True).head(n)
    return order.select("temperature", "threshold", "balance_score", "n_selected").to_dicts()
