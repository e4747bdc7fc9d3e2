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


# ---------------------------------------------------------------- B-STaR reference-code options
def naive_reference_code(rows: list[dict], thr: float, n_star: int, average_over: str,
                         reference: dict[str, str] | None = None, reference_score: float = 1.0) -> tuple[float, int]:
    """hkust-nlp/B-STaR as written: get_unique_trn_json appends the reference solution (score 1.0) to a
    query's solutions, sorts them by score (stable, descending), keeps those scoring > threshold and
    drops repeated outputs (the first copy stays); cal_modi_acc_soft then scores each query of that
    set min(n'/8, 1) * n'/n and takes np.mean over them. No cap here (max_samples unbounded).
    Returns (balance, number of queries with a selection)."""
    per: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["sample_idx"]):
        per.setdefault(r["prompt_id"], []).append(r)
    values, with_selection = [], 0
    for query, solutions in per.items():
        if reference and query in reference:
            # appended last in the reference code; first here, so that on a score tie with an identical
            # sampled text the reference's (correct) copy is the one kept, as `with_reference` documents
            solutions = [{"text": reference[query], "correct": True, "score": reference_score}, *solutions]
        unique: dict[str, bool] = {}
        for s in sorted(solutions, key=lambda s: -s["score"]):
            if s["score"] > thr and s["text"] not in unique:
                unique[s["text"]] = s["correct"]
        if unique:
            with_selection += 1
            num = sum(unique.values())
            ratio = num / len(unique)
            values.append(ratio if num >= n_star else num * ratio / n_star)
        elif average_over == "all":
            values.append(0.0)
    return (sum(values) / len(values) if values else 0.0), with_selection


@pytest.mark.parametrize("inject", [False, True])
@pytest.mark.parametrize("average_over", ["all", "selected"])
def test_selected_average_matches_reference_semantics(average_over, inject):
    rng = np.random.default_rng(11 + inject)
    rows = [(1.0, f"p{p:02d}", f"t{rng.integers(0, 4)}", bool(rng.random() < 0.4), round(float(rng.uniform(-1, 1.4)), 2))
            for p in range(25) for _ in range(int(rng.integers(2, 7)))]
    df = probe(rows)
    # a copy's correctness must follow its text where a reference may share it: make t0 always correct
    df = df.with_columns(correct=pl.col("correct") | (pl.col("text") == "t0"))
    reference = {f"p{p:02d}": ("t0" if p % 3 == 0 else f"ref{p}") for p in range(0, 25, 2)} if inject else None
    ref_df = pl.DataFrame({"prompt_id": list(reference), "text": list(reference.values())}) if inject else None
    thresholds = [round(-1 + i / 20, 2) for i in range(50)]
    grid = calibration_grid(df, thresholds, n_star=3, k=2, average_over=average_over, reference=ref_df,
                            record={"set": "probe", "average_over": average_over, "threshold_from": "probe",
                                    "inject_reference": "balance" if inject else "none"})
    for row in grid.iter_rows(named=True):
        want, n_sel = naive_reference_code(df.to_dicts(), row["threshold"], 3, average_over, reference)
        assert row["balance_score"] == pytest.approx(want, abs=1e-9), row
        assert row["n_prompts_selected"] == n_sel
    assert grid["n_prompts"].unique().to_list() == [25]


def test_injection_adds_one_correct_candidate():
    # one prompt: distinct above 0.5 are x (correct), y (wrong), z (correct); n* = 4
    df = probe([(1.0, "a", "x", True, 0.9), (1.0, "a", "y", False, 0.8), (1.0, "a", "z", True, 0.7),
                (1.0, "a", "w", False, 0.1)])
    ref = pl.DataFrame({"prompt_id": ["a"], "text": ["R"]})
    grid = calibration_grid(df, [0.5, 1.0], n_star=4, k=4, reference=ref)
    c, n = 2, 3
    assert grid["balance_score"][0] == pytest.approx(min((c + 1) / 4, 1) * (c + 1) / (n + 1))
    assert grid["n_selected"].to_list() == [4, 0]
    assert grid["balance_score"][1] == 0.0  # at a threshold >= reference_score it is not selected
    plain = calibration_grid(df, [0.5, 1.0], n_star=4, k=4)
    assert grid["pass_at_k"].to_list() == plain["pass_at_k"].to_list()  # the samples' own statistics
    assert grid["distinct_ratio"].to_list() == plain["distinct_ratio"].to_list()
    # a sampled text identical to the reference merges with it: still 3 distinct, 2 correct
    same = calibration_grid(df, [0.5], n_star=4, k=4, reference=pl.DataFrame({"prompt_id": ["a"], "text": ["x"]}))
    assert same["n_selected"].to_list() == [3]
    assert same["balance_score"][0] == pytest.approx(min(2 / 4, 1) * 2 / 3)
    # iteration_metrics gives the same number with the same options
    m = iteration_metrics(df, None, k=4, n_star=4, threshold=0.5, reference=ref, digits=None)
    assert m["balance_score"] == pytest.approx(grid["balance_score"][0])


@pytest.mark.parametrize("average_over", ["all", "selected"])
def test_vectorised_matches_naive_with_options(average_over):
    rng = np.random.default_rng(5)
    rows = [(temp, f"p{p:02d}", f"t{rng.integers(0, 5)}", bool(rng.random() < 0.45), round(float(rng.uniform(-1.2, 1.2)), 2))
            for temp in (0.6, 1.2) for p in range(15) if rng.random() > 0.15 for _ in range(int(rng.integers(2, 6)))]
    df = probe(rows).with_columns(correct=pl.col("correct") | (pl.col("text") == "t0"))
    ref = pl.DataFrame({"prompt_id": [f"p{p:02d}" for p in range(0, 15, 3)], "text": ["t0", "r3", "r6", "t0", "r12"]})
    thresholds = [round(-1 + i / 100, 2) for i in range(201)]
    grid = calibration_grid(df, thresholds, n_star=3, k=5, average_over=average_over, reference=ref)
    reference = dict(zip(ref["prompt_id"], ref["text"], strict=True))
    for temp in (0.6, 1.2):
        sub = [r for r in df.to_dicts() if r["temperature"] == temp]
        for row in grid.filter(pl.col("temperature") == temp).iter_rows(named=True):
            want, _ = naive_reference_code(sub, row["threshold"], 3, average_over, reference)
            assert row["balance_score"] == pytest.approx(want, abs=1e-9)
            m = iteration_metrics(probe([(r["temperature"], r["prompt_id"], r["text"], r["correct"], r["score"])
                                         for r in sub]).with_columns(correct=pl.col("correct") | (pl.col("text") == "t0")),
                                  None, k=5, n_star=3, threshold=row["threshold"], average_over=average_over,
                                  reference=ref, digits=None)
            assert m["balance_score"] == pytest.approx(row["balance_score"], abs=1e-9)
            break  # one threshold per temperature through iteration_metrics is enough (it is slow)
    assert grid["chosen"].sum() == 1


# md5 of the grids as the code before the options wrote them (tasks/metrics/calibration_grid.py at
# fe79a7c, write_table with CALIBRATION): the default options must keep these bytes. That code summed
# pass_at_k in Polars' group_by order, which varies from run to run, so for "random" it wrote this or
# a file differing in pass_at_k's last bit; the grid now sorts before summing and writes this one.
OLD_GRID_MD5 = {"known": "7d8301a307460a16daf576ce6a339c44", "random": "af54f7995df61ce362332b30dce1bdb9"}


def test_default_options_write_the_old_columns(tmp_path):
    import hashlib

    from tasks.data.schema import write_table

    rng = np.random.default_rng(3)
    rows = [(t, f"p{p}", f"t{rng.integers(0, 4)}", bool(rng.random() < 0.5), round(float(rng.uniform(-1, 1.5)), 2))
            for t in (0.6, 1.0) for p in range(12) for _ in range(5)]
    thresholds = [round(-1 + i / 100, 2) for i in range(201)]
    for name, df in (("known", KNOWN), ("random", probe(rows))):
        grid = calibration_grid(df, thresholds, n_star=3, k=4)
        assert grid.columns == list(CALIBRATION.columns)  # exactly the 7 columns
        path = write_table(grid, tmp_path / f"{name}.parquet", CALIBRATION)
        assert hashlib.md5(path.read_bytes()).hexdigest() == OLD_GRID_MD5[name]


def test_options_are_recorded_beside_the_grid():
    from tasks.data.schema import CALIBRATION_OPTIONS

    rec = {"set": "probe", "average_over": "selected", "threshold_from": "full", "inject_reference": "none"}
    grid = calibration_grid(KNOWN, [0.0, 0.5, 1.0], n_star=2, k=2, average_over="selected", record=rec)
    assert grid.schema == CALIBRATION_OPTIONS.schema
    assert grid.select(list(rec)).unique().to_dicts() == [rec]
    # both prompts have a selection at thresholds 0 and 0.5 (b: b1 0.6 at T=0.5), none at 1.0, so the
    # means equal those over all prompts (test_known_grid_by_construction), and 0.0 where nothing is selected
    assert grid["n_prompts_selected"].to_list() == [2, 2, 0, 2, 2, 0]
    assert grid["balance_score"].to_list() == pytest.approx([0.25, 0.25, 0.0, 0.625, 0.375, 0.0])
    one = calibration_grid(KNOWN, [0.65], n_star=2, k=2, average_over="selected")
    # T=0.5: only a {a1} (.5); T=1.0: a {a2} .5 and b {b3} 1*.5 -> .5
    assert one["balance_score"].to_list() == pytest.approx([0.5, 0.5])
    assert calibration_grid(KNOWN, [0.65], n_star=2, k=2)["balance_score"].to_list() == pytest.approx([0.25, 0.5])
