"""tasks/verify/math_verifier.py: final answers checked with math-verify, row by row in the samples' order."""

from __future__ import annotations

import threading

import polars as pl
import pytest

from tasks.config.recipe import VerifierConfig
from tasks.stages.score import score_table
from tasks.verify.math_verifier import MathVerifier
from tasks.verify.verifiers import make_verifier


def frames(cases: list[tuple[str | None, str]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One prompt per (gold, sample text) case."""
    ids = [f"p{i:03d}" for i in range(len(cases))]
    prompts = pl.DataFrame({"prompt_id": ids, "text": [f"question {i}" for i in range(len(cases))],
                            "answer": [g for g, _ in cases]}, schema_overrides={"answer": pl.String})
    samples = pl.DataFrame({"prompt_id": ids, "sample_idx": [0] * len(cases), "text": [t for _, t in cases]},
                           schema_overrides={"sample_idx": pl.Int32})
    return samples, prompts


def judged(cases: list[tuple[str | None, str]], verifier: MathVerifier | None = None) -> pl.DataFrame:
    samples, prompts = frames(cases)
    return (verifier or MathVerifier(1, 1)).verify(samples, prompts)


EQUIVALENT = [
    ("72", "so the total is \\boxed{72}"),
    ("72", "She has 48 + 24 = 72 clips. The answer is 72"),
    ("72", "48 + 24 = 72\n#### 72"),
    ("72", "48 + 24 = 72. Answer: 72"),
    ("72", "The answer is 72 dollars."),
    ("72", "He has 6*7 = 42 pencils and 30 more.\nThe final answer is $\\boxed{72}$."),
    ("0.5", "\\boxed{\\frac{1}{2}}"),
    ("\\frac{1}{2}", "Answer: 1/2"),
    ("\\frac{1}{2}", "The final answer is $0.5$"),
    ("\\frac{3}{4}", "Answer: 0.75"),
    ("2", "\\boxed{2.0}"),
    ("1200", "Answer: 1,200"),
    ("-3", "The answer is -3."),
    ("50", "So half of the class. Answer: 50%"),
    ("75\\%", "\\boxed{75\\%}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}"),
    ("(3, \\infty)", "the set is \\boxed{(3,\\infty)}"),
    ("9\\pi", "The area is $9\\pi$."),
]

NOT_EQUIVALENT = [
    ("72", "\\boxed{73}"),
    ("0.5", "\\boxed{0.6}"),
    ("\\frac{1}{2}", "\\boxed{2}"),
    ("2", "\\boxed{2.00001}"),
    ("3", "The answer is -3."),
    ("72", "72 apples, then 5 more arrive: 5"),  # the last answer counts, not the first number
    ("75\\%", "\\boxed{0.75}"),
    ("72", "I do not know."),
    ("72", ""),
    (None, "\\boxed{72}"),  # no gold answer: nothing can be correct
]


def test_equivalent_answers_are_correct():
    out = judged(EQUIVALENT)
    wrong = [case for case, ok in zip(EQUIVALENT, out["correct"]) if not ok]
    assert wrong == []


def test_different_answers_are_incorrect():
    out = judged(NOT_EQUIVALENT)
    right = [case for case, ok in zip(NOT_EQUIVALENT, out["correct"]) if ok]
    assert right == []


def test_extracted_answer_is_the_matched_text():
    out = judged([("72", "Answer: 1,200"), ("0.5", "so \\boxed{\\frac{1}{2}}."), ("1", "no number here"),
                  ("72", "#### 72")])
    assert out["extracted_answer"].to_list() == ["1200", "\\frac{1}{2}", None, "72"]


def test_garbage_and_huge_inputs_are_incorrect_and_do_not_stop_the_batch():
    garbage = [
        "\\boxed{10^{10^{10}}}",  # the comparison would need a 10-billion-digit number: times out
        "\\boxed{9^{9^{9^{9}}}}",
        "Answer: 9**9**9**9",
        "\\boxed{100000000000!}",
        "\\boxed{" + "(" * 3000 + "}",
        "\\boxed{\\frac{" * 300 + "}" * 600,
        "1+" * 20_000 + "1",
        "\x00\x01\ufffd\\boxed{}\\frac{}{}$$$",
        "x" * 1_000_000,
        "\\boxed{" + "9" * 50_000 + "}",
    ]
    cases = [("72", t) for t in garbage] + [("72", "garbage first, then \\boxed{72}")]
    out = judged(cases)
    assert out["correct"].to_list() == [False] * len(garbage) + [True]
    assert out["extracted_answer"].str.len_chars().max() <= 200  # stored answers stay short


def test_row_order_and_keys_are_kept():
    """Repeated texts, several prompts, repeated (prompt_id, sample_idx) keys (probe samples at
    several temperatures): every row is judged in place."""
    prompts = pl.DataFrame({"prompt_id": ["a", "b", "c"], "text": ["qa", "qb", "qc"], "answer": ["1", "0.5", "7"]})
    texts = {"a": ["\\boxed{1}", "\\boxed{2}"], "b": ["Answer: 1/2", "\\boxed{1}"], "c": ["#### 7", "#### 8"]}
    rows = [(p, i % 2, texts[p][(i * 7 + len(p)) % 2]) for i in range(30) for p in ("c", "a", "b")]
    samples = pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String},
                           orient="row").with_columns(temperature=pl.int_range(pl.len()).cast(pl.Float64))
    out = MathVerifier().verify(samples, prompts)
    assert out.select(samples.columns).equals(samples)
    expected = [t in ("\\boxed{1}", "Answer: 1/2", "#### 7") and not (p == "b" and t == "\\boxed{1}")
                for p, _, t in rows]
    assert out["correct"].to_list() == expected
    assert out.columns == [*samples.columns, "extracted_answer", "correct"]


def test_same_result_outside_the_main_thread():
    """A worker thread cannot use math-verify's SIGALRM timeouts, so the work moves to a child process."""
    cases = EQUIVALENT[:4] + NOT_EQUIVALENT[:4] + [("72", "\\boxed{10^{10^{10}}}")]
    samples, prompts = frames(cases)
    result: dict[str, pl.DataFrame] = {}
    worker = threading.Thread(target=lambda: result.update(out=MathVerifier(1, 1).verify(samples, prompts)))
    worker.start()
    worker.join(timeout=120)
    assert result["out"].equals(MathVerifier(1, 1).verify(samples, prompts))
    assert result["out"]["correct"].to_list() == [True] * 4 + [False] * 5


def test_registered_and_used_by_the_score_stage():
    assert isinstance(make_verifier("math_verify"), MathVerifier)
    samples, prompts = frames([("0.5", "\\boxed{\\frac12}"), ("3", "Answer: 4")])
    scored = score_table(samples, prompts, VerifierConfig(type="math_verify"))
    assert scored["correct"].to_list() == [True, False]
    assert scored["score"].to_list() == [1.0, 0.0]


@pytest.mark.parametrize("gold", ["72", "\\frac{1}{2}", "(3, \\infty)"])
def test_gold_written_as_its_own_sample_is_correct(gold):
    assert judged([(gold, f"The final answer is $\\boxed{{{gold}}}$.")])["correct"].item()
