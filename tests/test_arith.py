"""tasks/data/arith.py: the deterministic arithmetic word-problem generator."""

from __future__ import annotations

import re

import polars as pl
import pytest

from tasks.data.arith import ITEMS, NAMES, generate_problems
from tasks.data.schema import stable_ids
from tasks.verify.verifiers import EQUATION, ArithChainVerifier

EQ = re.compile(EQUATION)


def _as_prompts_and_samples(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    # Random problems can repeat; one row per prompt_id keeps the joins one-to-one.
    prompts = df.with_columns(stable_ids(df["text"])).unique("prompt_id", keep="first", maintain_order=True)
    samples = prompts.select("prompt_id", pl.lit(0, pl.Int32).alias("sample_idx"), pl.col("target").alias("text"))
    return prompts, samples


def test_same_seed_gives_identical_frame():
    a = generate_problems(50, 3, seed=7)
    b = generate_problems(50, 3, seed=7)
    assert a.equals(b)


def test_different_seed_or_steps_gives_different_problems():
    base = generate_problems(50, 2, seed=7)
    assert not base["text"].equals(generate_problems(50, 2, seed=8)["text"])
    assert not base["text"].equals(generate_problems(50, 3, seed=7)["text"])


def test_columns_and_types():
    df = generate_problems(10, 2, seed=0)
    assert df.schema == pl.Schema({"text": pl.String, "answer": pl.String, "target": pl.String,
                                   "difficulty": pl.Int32})
    assert df.height == 10
    assert df["difficulty"].to_list() == [2] * 10


@pytest.mark.parametrize("steps, ranges", [(1, {}), (2, {}), (4, {}), (6, {}),
                                           (3, {"max_start": 500, "max_operand": 250}),
                                           (2, {"max_start": 2, "max_operand": 1})])
def test_answer_matches_target_and_chain(steps, ranges):
    max_start, max_operand = ranges.get("max_start", 20), ranges.get("max_operand", 9)  # the defaults
    df = generate_problems(200, steps, seed=3, **ranges)
    for text, answer, target in df.select("text", "answer", "target").iter_rows():
        assert target.endswith(f" Answer: {answer}")
        eqs = EQ.findall(target)
        assert len(eqs) == steps
        qnums = [int(x) for x in re.findall(r"\d+", text)]
        assert len(qnums) == steps + 1
        cur = qnums[0]
        assert 2 <= cur <= max_start
        for j, (a, op, b, c) in enumerate(eqs):
            a, b, c = int(a), int(b), int(c)
            assert a == cur, "each step starts from the previous result"
            assert b == qnums[j + 1], "operands in question order"
            assert 1 <= b <= max_operand
            assert c == (a + b if op == "+" else a - b)
            assert c >= 0, "no negative intermediate result"
            cur = c
        assert str(cur) == answer


def test_question_wording():
    df = generate_problems(100, 2, seed=1)
    for text in df["text"]:
        name, _has, _num, item = text.split(" ")[:4]
        assert name in NAMES
        assert item.rstrip(".") in ITEMS
        assert text.count(" Then ") == 2
        assert text.endswith(f"How many {item.rstrip('.')} now?")


def test_subtraction_used_and_never_below_zero():
    df = generate_problems(500, 6, seed=11)
    ops = "".join(df["target"].to_list())
    assert "-" in ops and "+" in ops
    assert (df["answer"].cast(pl.Int64) >= 0).all()
    assert not any(re.search(r"=-\d", t) for t in df["target"])


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_every_target_passes_arith_chain_verifier(steps):
    df = generate_problems(300, steps, seed=5)
    prompts, samples = _as_prompts_and_samples(df)
    verifier = ArithChainVerifier()
    out = verifier.verify(samples, prompts)
    assert out.height == samples.height > 0.9 * df.height
    assert out["correct"].all()
    checks = verifier.equation_checks(samples, prompts)
    assert checks["n_equations"].to_list() == [steps] * samples.height
    assert checks["chain_ok"].all()


def test_ranges_are_used():
    df = generate_problems(300, 1, seed=2, max_start=9000, max_operand=5000)
    starts = [int(re.findall(r"\d+", text)[0]) for text in df["text"]]
    assert max(starts) > 20 and max(starts) <= 9000
    operands = [int(b) for _a, _op, b, _c in (EQ.findall(t)[0] for t in df["target"])]
    assert max(operands) > 9 and max(operands) <= 5000


def test_zero_problems():
    df = generate_problems(0, 2, seed=0)
    assert df.height == 0
    assert set(df.columns) == {"text", "answer", "target", "difficulty"}
