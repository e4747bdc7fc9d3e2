"""The free-text arithmetic verifier (arith_free): stated answer plus every written equation."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.verify.chain_verifier import FreeTextArithVerifier, equation_checks, evaluate_expression, extract_final_answer
from tasks.verify.verifiers import make_verifier


@pytest.mark.parametrize(("expr", "value"), [
    ("7 + 3", 10.0), ("3 + 4 * 2 - 1", 10.0), ("12 × 3", 36.0), ("9 ÷ 3 + 1", 4.0), ("1,000 + 200", 1200.0),
    ("$5 * 2", 10.0), ("8 / 0", None), ("7 +", None),
])
def test_expressions_follow_precedence_and_refuse_what_does_not_parse(expr, value):
    assert evaluate_expression(expr) == value


def _verify(texts: list[str], gold: str) -> pl.DataFrame:
    samples = pl.DataFrame({"prompt_id": ["p"] * len(texts), "sample_idx": list(range(len(texts))), "text": texts})
    return FreeTextArithVerifier().verify(samples, pl.DataFrame({"prompt_id": ["p"], "answer": [gold]}))


def test_a_right_answer_needs_a_right_chain():
    out = _verify([
        "She has 7 + 3 = 10 pens, then 10 - 2 = 8. The answer is 8.",  # right
        "She has 7 + 3 = 11 pens, then 11 - 3 = 8. The answer is 8.",  # right answer, wrong step
        "The answer is 8.",                                              # no work shown
        "7 + 3 - 2 = 8, so \\boxed{8}",                                  # one multi-step equation
        "7 + 3 = 10, then 10 - 2 = 8. The answer is 9.",                 # right chain, wrong answer
    ], "8")
    assert out["correct"].to_list() == [True, False, False, True, False]
    assert out["extracted_answer"].to_list() == ["8", "8", "8", "8", "9"]


def test_answers_are_normalised_and_the_last_statement_wins():
    out = _verify(["1,000 + 200 = 1,200 coins. Answer: 1,200.0", "2 + 2 = 4. The answer is 4. Answer: 5"], "1200")
    assert out["extracted_answer"].to_list() == ["1200", "5"]
    assert out["correct"].to_list() == [True, False]


def test_the_last_number_is_the_answer_when_none_is_stated():
    assert pl.select(extract_final_answer(pl.lit("5 + 4 = 9 so she has 9 shells"))).item() == "9"
    assert pl.select(extract_final_answer(pl.lit("no numbers here"))).item() is None


def test_equation_checks_count_per_row_in_order():
    checks = equation_checks(pl.DataFrame({"text": ["1 + 1 = 2 and 2 * 3 = 6", "none", "4 - 1 = 2"]}))
    assert checks["n_equations"].to_list() == [2, 0, 1]
    assert checks["chain_ok"].to_list() == [True, False, False]


def test_a_prompt_without_gold_is_never_correct():
    samples = pl.DataFrame({"prompt_id": ["q"], "sample_idx": [0], "text": ["2 + 2 = 4. The answer is 4."]})
    out = FreeTextArithVerifier().verify(samples, pl.DataFrame({"prompt_id": ["q"], "answer": [None]},
                                                               schema={"prompt_id": pl.String, "answer": pl.String}))
    assert out["correct"].to_list() == [False]


def test_it_is_a_named_verifier_and_keeps_the_row_order():
    verifier = make_verifier("arith_free")
    texts = [f"{i} + 1 = {i + 1}. The answer is {i + 1}." for i in range(50)]
    samples = pl.DataFrame({"prompt_id": ["p"] * 50, "sample_idx": list(range(50)), "text": texts}).reverse()
    out = verifier.verify(samples, pl.DataFrame({"prompt_id": ["p"], "answer": ["7"]}))
    assert out["sample_idx"].to_list() == list(reversed(range(50)))
    assert out.filter(pl.col("correct"))["sample_idx"].to_list() == [6]
