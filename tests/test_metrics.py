"""tasks/metrics/samples.py: per-iteration sample metrics on hand-built scored tables."""

from __future__ import annotations

import math

import polars as pl
import pytest

from tasks.metrics.samples import per_prompt, summarise


def scored(rows: list[tuple[str, str, bool, str, int]]) -> pl.DataFrame:
    """rows: (prompt_id, text, correct, finish_reason, n_tokens)."""
    df = pl.DataFrame(rows, schema={"prompt_id": pl.String, "text": pl.String, "correct": pl.Boolean,
                                    "finish_reason": pl.String, "n_tokens": pl.Int32}, orient="row")
    return df.with_columns(sample_idx=pl.int_range(pl.len()).over("prompt_id").cast(pl.Int32))


TABLE = scored([
    ("p1", "a", True, "stop", 10), ("p1", "a", True, "length", 20),
    ("p1", "b", False, "stop", 30), ("p1", "c", False, "length", 40),
    ("p2", "x", False, "stop", 5), ("p2", "x", False, "stop", 5),
    ("p2", "y", False, "stop", 5), ("p2", "z", False, "stop", 5),
    ("p3", "q", True, "stop", 1), ("p3", "r", True, "stop", 2),
    ("p3", "s", True, "length", 3), ("p3", "t", False, "stop", 4),
])


def test_per_prompt_counts():
    pp = per_prompt(TABLE)
    assert pp["prompt_id"].to_list() == ["p1", "p2", "p3"]
    assert pp["n"].to_list() == [4, 4, 4]
    assert pp["c"].to_list() == [2, 0, 3]
    assert pp["distinct_correct"].to_list() == [1, 0, 3]
    assert pp["truncated"].to_list() == [2, 0, 1]
    assert pp["tokens"].to_list() == [100, 20, 10]


def test_summarise_hand_computed():
    m = summarise(TABLE, k=2)
    assert m["n_prompts"] == 3
    assert m["n_samples"] == 12
    assert m["pass@1"] == pytest.approx((2 / 4 + 0 + 3 / 4) / 3, abs=1e-6)
    # p1: 1 - C(2,2)/C(4,2) = 5/6; p2: 0; p3: 1 - C(1,2)/C(4,2) = 1
    assert m["pass@2"] == pytest.approx((5 / 6 + 0 + 1) / 3, abs=1e-6)
    assert m["coverage"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["distinct_correct_ratio"] == pytest.approx((1 + 3) / (2 + 3), abs=1e-6)
    assert m["truncation_rate"] == pytest.approx(3 / 12, abs=1e-6)
    assert m["mean_tokens"] == pytest.approx(130 / 12, abs=1e-3)


def test_summarise_is_order_independent():
    assert summarise(TABLE.reverse(), k=3) == summarise(TABLE, k=3)


def test_pass_at_k_skips_prompts_with_fewer_than_k_samples():
    extra = pl.concat([TABLE, scored([("p4", "a", True, "stop", 1)])])
    m = summarise(extra, k=2)
    assert m["n_prompts"] == 4
    assert m["pass@1"] == pytest.approx((0.5 + 0 + 0.75 + 1) / 4, abs=1e-6)
    assert m["pass@2"] == pytest.approx((5 / 6 + 0 + 1) / 3, abs=1e-6)  # p4 (n=1 < k) left out
    assert math.isnan(summarise(extra.filter(pl.col("prompt_id") == "p4"), k=2)["pass@2"])


def test_no_correct_samples():
    m = summarise(TABLE.with_columns(correct=pl.lit(False)), k=4)
    assert m["pass@1"] == 0.0
    assert m["pass@4"] == 0.0
    assert m["coverage"] == 0.0
    assert m["distinct_correct_ratio"] == 0.0  # no division by zero


def test_all_identical_correct_samples():
    df = scored([("p1", "same", True, "stop", 4)] * 5 + [("p2", "same", True, "stop", 4)] * 5)
    m = summarise(df, k=5)
    assert m["pass@1"] == 1.0
    assert m["pass@5"] == 1.0
    assert m["coverage"] == 1.0
    # one distinct correct text per prompt (counted per prompt, not globally)
    assert m["distinct_correct_ratio"] == pytest.approx(2 / 10)
    assert m["truncation_rate"] == 0.0
    assert m["mean_tokens"] == 4.0


def test_k_equals_one():
    m = summarise(TABLE, k=1)
    assert m["pass@1"] == pytest.approx((0.5 + 0 + 0.75) / 3, abs=1e-6)
    assert "pass@2" not in m
    assert set(m) == {"n_prompts", "n_samples", "pass@1", "coverage", "distinct_correct_ratio",
                      "truncation_rate", "mean_tokens"}


def test_empty_table():
    assert summarise(TABLE.head(0), k=4) == {"n_prompts": 0, "n_samples": 0}
