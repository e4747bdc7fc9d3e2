"""tasks/metrics/bstar.py: B-STaR iteration metrics on hand-computed scored tables."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import polars as pl
import pytest

from tasks.metrics.bstar import (
    balance_score,
    hard_prompts,
    iteration_metrics,
    pass_at_k_s,
    prompt_stats,
    repetition_rates,
)
from tasks.data.schema import SCORED, SELECTED

Row = tuple[str, str, bool, float, float | None, str, int]


def scored(rows: list[Row], temperature: float = 1.0) -> pl.DataFrame:
    """rows: (prompt_id, text, correct, score, reward, finish_reason, n_tokens); sample_idx in order."""
    df = pl.DataFrame(rows, schema={"prompt_id": pl.String, "text": pl.String, "correct": pl.Boolean,
                                    "score": pl.Float64, "reward": pl.Float64, "finish_reason": pl.String,
                                    "n_tokens": pl.Int32}, orient="row")
    return df.with_columns(
        sample_idx=pl.int_range(pl.len()).over("prompt_id").cast(pl.Int32), iteration=pl.lit("0001"),
        temperature=pl.lit(temperature), seed=pl.lit(0, dtype=pl.Int64), model_hash=pl.lit("m"),
        pass_name=pl.lit("train"), extracted_answer=pl.lit(None, dtype=pl.String),
    ).select(list(SCORED.columns))


TABLE = scored([
    ("p1", " 1+2=3. Answer: 3", True, 1.2, 0.9, "stop", 10),
    ("p1", " 1+2=3. Answer: 3", True, 1.1, 0.5, "length", 20),          # exact duplicate
    ("p1", " 1+2=3. So the answer: 3", True, 0.9, -0.5, "stop", 30),    # same equation chain
    ("p1", " 1+2=4. Answer: 4", False, 0.3, 0.95, "stop", 40),          # top reward, wrong
    ("p2", "a b c d a b c d", False, 0.2, 0.1, "stop", 5),              # 5 four-grams, 1 repeated
    ("p2", "e f", False, -0.1, 0.2, "stop", 5),
    ("p2", "g h", False, 0.6, 0.3, "stop", 5),
    ("p2", "i j", False, 0.0, 0.3, "stop", 5),
    ("p3", " 2+2=4. Answer: 4", True, 0.8, 0.2, "stop", 1),
    ("p3", " 2+2=4. 4+0=4. Answer: 4", True, 0.7, 0.6, "stop", 2),     # ties top reward, lower idx
    ("p3", "x x x x x x", False, 0.55, 0.6, "stop", 3),                 # 3 four-grams, 2 repeated
    ("p3", " 2 + 2 = 4. Answer: 4", True, 0.4, 0.1, "length", 4),       # same chain as idx 0
])


def test_prompt_stats_hand_computed():
    ps = prompt_stats(TABLE)
    assert ps["prompt_id"].to_list() == ["p1", "p2", "p3"]
    assert ps["n"].to_list() == [4, 4, 4]
    assert ps["c"].to_list() == [3, 0, 3]
    assert ps["distinct_correct"].to_list() == [2, 0, 3]
    assert ps["distinct_correct_eq"].to_list() == [1, 0, 2]
    assert ps["truncated"].to_list() == [1, 0, 1]
    assert ps["tokens"].to_list() == [100, 20, 10]
    assert ps["best_reward_correct"].to_list() == [False, False, True]
    assert ps["repetition"].to_list() == pytest.approx([0.0, 0.2 / 4, (2 / 3) / 4])


def test_repetition_rates_definition():
    texts = pl.Series(["a b c d a b c d", "x x x x x x", "one two three", "", "a\tb\nc  d a b c d"])
    assert repetition_rates(texts).tolist() == pytest.approx([0.2, 2 / 3, 0.0, 0.0, 0.2])


def test_iteration_metrics_hand_computed():
    m = iteration_metrics(TABLE, None, k=4, n_star=2, threshold=0.5)
    expected = {
        "pass@1": 0.5, "pass@4": 2 / 3, "pass@4-S2": 2 / 3, "pass@4-S4": 0.0, "coverage": 2 / 3,
        "correct_hist_0": 1 / 3, "correct_hist_1": 0.0, "correct_hist_2": 0.0, "correct_hist_3": 2 / 3,
        "correct_hist_4": 0.0, "distinct_correct_ratio": 5 / 6, "distinct_correct_ratio_eq": 3 / 6,
        "best_of_k": 1 / 3, "reward@4-S2": 2 / 3, "reward@4-S4": 0.0, "gen_ver_gap": 1 / 3 - 1 / 2,
        # p1: {2 distinct correct} -> 1; p2: 1 wrong -> 0; p3: 2 correct of 3 -> 1 * 2/3
        "balance_score": (1 + 0 + 2 / 3) / 3,
        "repetition_rate": (0.2 + 2 / 3) / 12, "mean_tokens": 130 / 12, "truncation_rate": 2 / 12,
    }
    for key, want in expected.items():
        assert m[key] == pytest.approx(want, abs=1e-6), key
    assert m["n_prompts"] == 3 and m["n_samples"] == 12
    assert all(v == round(v, 6) for v in m.values())
    json.dumps(m, allow_nan=False)
    assert "length_drift" not in m and "hard_prompts_solved" not in m and "n_selected" not in m


def test_unbiased_pass_at_k_s_when_n_exceeds_k():
    m = iteration_metrics(TABLE, None, k=2, n_star=8, threshold=0.5)
    # c=3 of n=4: P(both of 2 draws correct) = C(3,2)/C(4,2) = 1/2
    assert m["pass@2-S2"] == pytest.approx((0.5 + 0 + 0.5) / 3, abs=1e-6)
    assert m["pass@2-S4"] == 0.0
    # no prompt has n == k, so the histogram is empty
    assert [m[f"correct_hist_{j}"] for j in range(3)] == [0.0, 0.0, 0.0]
    # n_star = 8: p1 2/8 * 1, p3 2/8 * 2/3
    assert m["balance_score"] == pytest.approx((0.25 + 1 / 6) / 3, abs=1e-6)


def test_pass_at_k_s_matches_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 9))
        c, k, s = int(rng.integers(0, n + 1)), int(rng.integers(1, n + 1)), int(rng.integers(0, 5))
        draws = list(itertools.combinations([1] * c + [0] * (n - c), k))
        want = sum(sum(d) >= s for d in draws) / len(draws)
        assert pass_at_k_s(np.array([n]), np.array([c]), k, s)[0] == pytest.approx(want, abs=1e-12)
    assert math.isnan(pass_at_k_s(np.array([2]), np.array([1]), 3, 1)[0])


def test_optional_keys_baseline_hard_and_selected():
    selected = pl.DataFrame({"prompt_id": ["p1", "p1", "p3", "ghost"], "sample_idx": [0, 2, 0, 0]})
    base = {"mean_tokens": 10.0, "truncation_rate": 0.1}
    m = iteration_metrics(TABLE, selected, k=4, threshold=0.5, baseline=base,
                          hard_prompt_ids=["p2", "p3", "absent"])
    assert m["length_drift"] == pytest.approx(130 / 120 - 1, abs=1e-6)
    assert m["truncation_drift"] == pytest.approx(2 / 12 - 0.1, abs=1e-6)
    assert m["hard_prompts_solved"] == 0.5  # p2 unsolved, p3 solved; "absent" has no samples
    assert m["n_selected"] == 4
    counts = np.array([2, 1, 1])  # ghost is selected although it has no scored samples
    assert m["query_uniformity"] == pytest.approx(1 - counts.std() / counts.mean(), abs=1e-6)
    m = iteration_metrics(TABLE, selected.head(2), k=4, threshold=0.5, hard_prompt_ids=["absent"])
    assert m["query_uniformity"] == 1.0 and "hard_prompts_solved" not in m
    m = iteration_metrics(TABLE, pl.DataFrame(schema=SELECTED.schema), k=4, threshold=0.5)
    assert m["n_selected"] == 0 and m["query_uniformity"] == 0.0


def test_empty_scored_does_not_crash():
    m = iteration_metrics(pl.DataFrame(schema=SCORED.schema), pl.DataFrame(schema=SELECTED.schema), k=3,
                          threshold=0.0, baseline={"mean_tokens": 5.0, "truncation_rate": 0.0},
                          hard_prompt_ids=["p"])
    assert m["n_prompts"] == 0 and m["pass@1"] == 0.0 and m["balance_score"] == 0.0
    assert m["correct_hist_0"] == 0.0 and "hard_prompts_solved" not in m
    json.dumps(m, allow_nan=False)
    assert prompt_stats(pl.DataFrame(schema=SCORED.schema)).height == 0
    assert hard_prompts(pl.DataFrame(schema=SCORED.schema)) == []


def test_no_correct_samples():
    df = scored([(p, f"t{i}", False, 0.9, 0.5, "stop", 3) for p in ("a", "b") for i in range(3)])
    m = iteration_metrics(df, None, k=3, threshold=0.5)
    for key in ("pass@1", "pass@3", "pass@3-S2", "coverage", "distinct_correct_ratio",
                "distinct_correct_ratio_eq", "best_of_k", "balance_score"):
        assert m[key] == 0.0, key
    assert m["correct_hist_0"] == 1.0
    assert m["reward@3-S2"] == 1.0  # scores are high even though nothing is correct


def test_all_identical_samples():
    df = scored([("a", " 1+1=2. Answer: 2", True, 1.0, 0.3, "stop", 7)] * 4)
    m = iteration_metrics(df, None, k=4, n_star=8, threshold=0.5)
    assert m["distinct_correct_ratio"] == 0.25 and m["distinct_correct_ratio_eq"] == 0.25
    assert m["balance_score"] == pytest.approx(1 / 8)  # one distinct selected sample, correct
    assert m["best_of_k"] == 1.0 and m["gen_ver_gap"] == 0.0 and m["correct_hist_4"] == 1.0
    assert m["repetition_rate"] == 0.0


def test_k_equals_one_and_short_prompts():
    df = scored([("a", "x", True, 1.0, 0.1, "stop", 1), ("b", "y", False, 0.0, 0.1, "stop", 1)])
    m = iteration_metrics(df, None, k=1, threshold=0.5)
    assert m["pass@1"] == 0.5 and m["pass@1-S2"] == 0.0 and m["pass@1-S4"] == 0.0
    assert m["correct_hist_0"] == 0.5 and m["correct_hist_1"] == 0.5
    # k=2 with one sample per prompt: pass@k / histogram have no eligible prompt
    m = iteration_metrics(df, None, k=2, threshold=0.5)
    assert m["pass@2"] == 0.0 and m["correct_hist_1"] == 0.0 and m["pass@1"] == 0.5


def test_best_of_k_falls_back_to_score_when_reward_is_null():
    df = scored([("a", "x", False, 0.2, None, "stop", 1), ("a", "y", True, 0.9, None, "stop", 1),
                 ("b", "z", True, 0.3, None, "stop", 1), ("b", "w", False, 0.3, None, "stop", 1)])
    assert prompt_stats(df)["best_reward_correct"].to_list() == [True, True]  # b: tie -> lower idx


def test_balance_score_and_hard_prompts():
    assert balance_score(TABLE, 0.5, n_star=2) == pytest.approx((1 + 2 / 3) / 3)
    assert balance_score(TABLE, 5.0, n_star=2) == 0.0
    assert hard_prompts(TABLE) == ["p2"]
    assert hard_prompts(TABLE, cutoff=0.8) == ["p1", "p2", "p3"]


# ---------------------------------------------------------------- the hard tail by origin (hint pass)
def _synth(seed: int, n_prompts: int = 30, k: int = 4) -> pl.DataFrame:
    """A seeded random scored table with duplicates, truncations and rewards."""
    rng = np.random.default_rng(seed)
    n = n_prompts * k
    correct = rng.random(n) < np.repeat(rng.random(n_prompts), k)
    text = [f" {a}+{b}={a + b}. Answer: {a + b}" for a, b in zip(rng.integers(0, 3, n), rng.integers(0, 3, n))]
    reward = np.round(rng.uniform(-1, 1, n), 3)  # the draws in this order: the fixture below depends on it
    return pl.DataFrame({
        "prompt_id": np.repeat([f"p{i:03d}" for i in range(n_prompts)], k),
        "sample_idx": np.tile(np.arange(k), n_prompts).astype(np.int32), "text": text,
        "n_tokens": rng.integers(5, 30, n).astype(np.int32),
        "finish_reason": np.where(rng.random(n) < 0.1, "length", "stop"),
        "correct": correct, "reward": reward, "score": correct + 0.2 * reward})


# iteration_metrics of `_synth(8)` against the baseline `_synth(7)`, computed by the code before the hint pass
# existed (commit 19d134b): the hint pass must leave every key and value of a hints-off table as it was
SYNTH_METRICS = {
    "balance_score": 0.25, "best_of_k": 0.466667, "correct_hist_0": 0.233333, "correct_hist_1": 0.133333,
    "correct_hist_2": 0.133333, "correct_hist_3": 0.166667, "correct_hist_4": 0.333333, "coverage": 0.766667,
    "distinct_correct_ratio": 0.895522, "distinct_correct_ratio_eq": 0.895522, "gen_ver_gap": -0.091667,
    "hard_prompts_solved": 1.0, "length_drift": -0.044286, "mean_tokens": 16.725, "n_prompts": 30,
    "n_samples": 120, "n_selected": 23, "pass@1": 0.558333, "pass@4": 0.766667, "pass@4-S2": 0.633333,
    "pass@4-S4": 0.333333, "query_uniformity": 1.0, "repetition_rate": 0.0, "reward@4-S2": 0.633333,
    "reward@4-S4": 0.333333, "truncation_drift": 0.041667, "truncation_rate": 0.1}


def _compute(scored, baseline):
    from tasks.config.loading import recipe_from_dict
    from tasks.stages.check import compute_metrics

    selected = (_synth(8).filter(pl.col("score") > 0.5).group_by("prompt_id", maintain_order=True).head(1)
                .select("prompt_id", "sample_idx"))
    recipe = recipe_from_dict({"generate": {"k": 4}, "calibrate": {"n_star": 8}})
    return compute_metrics(scored, selected, baseline, {"temperature": 0.8, "threshold": 0.5}, recipe)


def test_keys_and_values_unchanged_without_hints():
    assert _compute(_synth(8), _synth(7)) == SYNTH_METRICS | {"temperature": 0.8, "threshold": 0.5}


def test_with_hints_the_old_keys_run_over_the_first_pass():
    """Hinted rows (origin column present) change no exploration key; the tail keys come on top."""
    def hinted(df):
        extra = df.filter(pl.col("sample_idx") < 2).with_columns(
            sample_idx=pl.col("sample_idx") + 1000, correct=pl.lit(True), score=pl.lit(1.5), origin=pl.lit("hinted"))
        return pl.concat([df.with_columns(origin=pl.lit("self")), extra], how="diagonal_relaxed")

    m = _compute(hinted(_synth(8)), hinted(_synth(7)))
    assert {k: m[k] for k in SYNTH_METRICS} == SYNTH_METRICS
    assert m["n_samples_hinted"] == 60 and m["hint_prompts"] == 30 and m["hint_rescued"] == 1.0
    assert not {k for k in m if k not in SYNTH_METRICS} - {"temperature", "threshold"} - TAIL_KEYS


TAIL_KEYS = {*(f"{key}_{o}" for key in ("n_samples", "selected", "hard_prompts_solved", "hard_prompts_selected")
               for o in ("self", "rationalized", "hinted")), "hard_prompts_solved_any", "hint_prompts", "hint_rescued"}


def test_tail_by_origin_hand_computed():
    from tasks.metrics.bstar import tail_by_origin

    rows = {"p1": [("self", True), ("self", False)],
            "p2": [("self", False), ("self", False), ("hinted", True), ("hinted", False)],
            "p3": [("self", False), ("self", False), ("rationalized", False), ("rationalized", False)],
            "p4": [("self", False), ("self", False), ("rationalized", True), ("rationalized", True)],
            "p5": [("self", False), ("self", False), ("hinted", False), ("hinted", False)],
            "p6": [("self", False), ("self", True)]}
    table = pl.DataFrame([(p, o, c) for p, rs in rows.items() for o, c in rs],
                         schema={"prompt_id": pl.String, "origin": pl.String, "correct": pl.Boolean}, orient="row")
    selected = pl.DataFrame({"prompt_id": ["p1", "p2", "p4", "p6", "p3"],
                             "origin": ["self", "hinted", "rationalized", "self", "reference"]})
    difficulty = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(1, 8)], "difficulty": [2, 2, 3, 3, 4, 4, 4]})
    m = tail_by_origin(table, selected, hard_prompt_ids=["p2", "p3", "p4", "p5", "p6", "elsewhere"],
                       difficulty=difficulty)
    assert m == {
        "n_samples_self": 12, "n_samples_rationalized": 4, "n_samples_hinted": 4,
        "selected_self": 2, "selected_rationalized": 1, "selected_hinted": 1, "selected_reference": 1,
        # five of the hard prompts are in this pool: p2 (hinted), p4 (rationalized) and p6 (self) are solved
        "hard_prompts_solved_self": 0.2, "hard_prompts_solved_rationalized": 0.2, "hard_prompts_solved_hinted": 0.2,
        "hard_prompts_solved_any": 0.6,
        "hard_prompts_selected_self": 0.2, "hard_prompts_selected_rationalized": 0.2,
        "hard_prompts_selected_hinted": 0.2, "hard_prompts_selected_reference": 0.2,
        "hint_prompts": 4, "hint_rescued": 0.5,  # p2 and p4 of p2-p5
        "solved_d2_self": 0.5, "solved_d2_rationalized": 0.0, "solved_d2_hinted": 0.5, "solved_d2_any": 1.0,
        "solved_d3_self": 0.0, "solved_d3_rationalized": 0.5, "solved_d3_hinted": 0.0, "solved_d3_any": 0.5,
        "solved_d4_self": 0.5, "solved_d4_rationalized": 0.0, "solved_d4_hinted": 0.0, "solved_d4_any": 0.5,
    }


def test_hard_prompts_count_first_pass_samples_only():
    table = pl.DataFrame({"prompt_id": ["a", "a", "a", "b"], "correct": [False, False, True, True],
                          "origin": ["self", "self", "hinted", "self"]})
    assert hard_prompts(table) == ["a"]
