"""tasks/metrics/calibration_grid.py: the vectorised (temperature, threshold) sweep."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from tasks.data.schema import CALIBRATION, SCORED, conform
from tasks.metrics.bstar import iteration_metrics
from tasks.metrics.calibration_grid import calibration_grid, choose


def probe(rows: list[tuple[float, str, str, bool, float]]) -> pl.DataFrame:
    """rows: (temperature, prompt_id, text, correct, score); sample_idx in order per prompt."""
    df = pl.DataFrame(rows, schema={"temperature": pl.Float64, "prompt_id": pl.String, "text": pl.String,
                                    "correct": pl.Boolean, "score": pl.Float64}, orient="row")
    return df.with_columns(
        sample_idx=pl.int_range(pl.len()).over("prompt_id").cast(pl.Int32), iteration=pl.lit("0001"),
        n_tokens=pl.lit(3, dtype=pl.Int32), finish_reason=pl.lit("stop"), seed=pl.lit(0, dtype=pl.Int64),
        model_hash=pl.lit("m"), pass_name=pl.lit("probe"), reward=pl.col("score"),
        extracted_answer=pl.lit(None, dtype=pl.String),
    ).select(list(SCORED.columns))


KNOWN = probe([
    (0.5, "a", "a1", True, 0.9), (0.5, "a", "a1", True, 0.7), (0.5, "b", "b1", False, 0.6),
    (0.5, "b", "b2", False, 0.2),
    (1.0, "a", "a2", True, 0.8), (1.0, "a", "a3", True, 0.4), (1.0, "b", "b3", True, 0.7),
    (1.0, "b", "b4", False, 0.55),
])


def test_known_grid_by_construction():
    grid = calibration_grid(KNOWN, [1.0, 0.0, 0.5], n_star=2, k=2)
    assert grid.columns == list(CALIBRATION.columns)
    assert grid.schema == CALIBRATION.schema
    conform(grid, CALIBRATION)
    assert grid["temperature"].to_list() == [0.5] * 3 + [1.0] * 3
    assert grid["threshold"].to_list() == [0.0, 0.5, 1.0] * 2
    # T=0.5: a -> {a1} 1 correct: min(1/2,1)*1 = .5 ; b -> all wrong: 0
    # T=1.0 thr 0: a 2/2 -> 1, b 1 of 2 -> .5*.5 ; thr .5: a {a2} -> .5, b {b3,b4} -> .25
    assert grid["balance_score"].to_list() == pytest.approx([0.25, 0.25, 0.0, 0.625, 0.375, 0.0])
    assert grid["n_selected"].to_list() == [3, 2, 0, 4, 3, 0]
    assert grid["pass_at_k"].to_list() == pytest.approx([0.5] * 3 + [1.0] * 3)
    assert grid["distinct_ratio"].to_list() == pytest.approx([0.5] * 3 + [1.0] * 3)
    assert grid["chosen"].to_list() == [False, False, False, True, False, False]
    assert choose(grid) == {"temperature": 1.0, "threshold": 0.0, "balance_score": 0.625}


def test_ties_go_to_lower_temperature_then_higher_threshold():
    rows = [(t, p, f"{p}{i}", i < 2, 0.9) for t in (0.9, 0.7) for p in ("a", "b") for i in range(3)]
    grid = calibration_grid(probe(rows), [0.0, 0.5, 0.95], n_star=2, k=3)
    best = grid.filter(pl.col("chosen"))
    assert grid["chosen"].sum() == 1
    assert (best["temperature"][0], best["threshold"][0]) == (0.7, 0.5)
    assert best["balance_score"][0] == pytest.approx(2 / 3)


def test_strict_threshold_and_missing_prompts():
    # score exactly equal to the threshold is not selected; prompt "b" has no samples at T=1.0
    rows = [(0.5, "a", "x", True, 0.5), (0.5, "b", "y", True, 0.7), (1.0, "a", "z", True, 0.51)]
    grid = calibration_grid(probe(rows), [0.5], n_star=1, k=1)
    assert grid["n_selected"].to_list() == [1, 1]
    assert grid["balance_score"].to_list() == [0.5, 1.0]  # T=1.0 averages over its 1 prompt
    assert choose(grid)["temperature"] == 1.0


def test_k_larger_than_samples_gives_null_pass_at_k():
    grid = calibration_grid(KNOWN, [0.0], n_star=2, k=5)
    assert grid["pass_at_k"].null_count() == grid.height
    conform(grid, CALIBRATION)


def test_empty_probe_and_choose_error():
    grid = calibration_grid(pl.DataFrame(schema=SCORED.schema), [0.0, 0.5], n_star=8, k=4)
    assert grid.height == 0 and grid.schema == CALIBRATION.schema
    with pytest.raises(ValueError):
        choose(grid)


def test_grid_matches_iteration_metrics_balance():
    rng = np.random.default_rng(1)
    rows = [(1.0, f"p{p}", f"t{rng.integers(0, 4)}", bool(rng.random() < 0.5), float(rng.uniform(-1, 2)))
            for p in range(20) for _ in range(6)]
    df = probe(rows)
    grid = calibration_grid(df, [-0.5, 0.25, 0.8], n_star=3, k=6)
    for thr, bs in zip(grid["threshold"], grid["balance_score"], strict=True):
        m = iteration_metrics(df, None, k=6, n_star=3, threshold=thr, digits=None)
        assert m["balance_score"] == pytest.approx(bs, abs=1e-9)


def naive_grid(rows: list[dict], thresholds: list[float], n_star: int, k: int) -> list[dict]:
    """Re-filter per (temperature, threshold); dedup keeps the best-scoring copy (ties: lowest idx)."""
    out = []
    for temp in sorted({r["temperature"] for r in rows}):
        per: dict[str, list[dict]] = {}
        for r in rows:
            if r["temperature"] == temp:
                per.setdefault(r["prompt_id"], []).append(r)
        ns = {p: len(v) for p, v in per.items()}
        cs = {p: sum(r["correct"] for r in v) for p, v in per.items()}
        pk = [1 - math.comb(ns[p] - cs[p], k) / math.comb(ns[p], k) for p in per if ns[p] >= k]
        distinct = sum(len({r["text"] for r in v if r["correct"]}) for v in per.values())
        for thr in sorted(thresholds):
            total, n_sel = 0.0, 0
            for v in per.values():
                best: dict[str, dict] = {}
                for r in sorted(v, key=lambda r: r["sample_idx"]):
                    if r["score"] > thr and (r["text"] not in best or r["score"] > best[r["text"]]["score"]):
                        best[r["text"]] = r
                n = len(best)
                c = sum(r["correct"] for r in best.values())
                total += min(c / n_star, 1) * c / n if n else 0.0
                n_sel += n
            out.append({"temperature": temp, "threshold": thr, "balance_score": total / len(per),
                        "pass_at_k": sum(pk) / len(pk) if pk else None,
                        "distinct_ratio": distinct / sum(cs.values()) if sum(cs.values()) else 0.0,
                        "n_selected": n_sel})
    return out


def test_vectorised_grid_matches_naive_refiltering():
    rng = np.random.default_rng(7)
    rows = []
    for temp in (0.6, 0.8, 1.2):
        for p in range(15):
            if rng.random() < 0.15:
                continue  # this prompt has no samples at this temperature
            for _ in range(int(rng.integers(3, 7))):  # some prompts have n < k
                # scores on the 0.01 grid so some equal a threshold exactly; duplicates may differ in
                # correctness, which exercises the "best copy decides" rule
                rows.append((temp, f"p{p:02d}", f"t{rng.integers(0, 5)}", bool(rng.random() < 0.45),
                             round(float(rng.uniform(-1.2, 1.2)), 2)))
    df = probe(rows)
    thresholds = [round(-1 + i / 100, 2) for i in range(201)]
    grid = calibration_grid(df, thresholds, n_star=3, k=5)
    want = naive_grid(df.to_dicts(), thresholds, n_star=3, k=5)
    assert grid.height == len(want)
    for got, exp in zip(grid.iter_rows(named=True), want, strict=True):
        for key, w in exp.items():
            assert got[key] == (None if w is None else pytest.approx(w, abs=1e-9)), (got, exp, key)
    top = max(round(w["balance_score"], 12) for w in want)
    best = min((w for w in want if round(w["balance_score"], 12) == top),
               key=lambda w: (w["temperature"], -w["threshold"]))
    assert choose(grid)["temperature"] == best["temperature"]
    assert choose(grid)["threshold"] == best["threshold"]
    assert grid["chosen"].sum() == 1
