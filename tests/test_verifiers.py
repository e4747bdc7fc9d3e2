"""tasks/verify/verifiers.py: answer matching and chain-of-thought checks on hand-written samples."""

from __future__ import annotations

import os

import polars as pl
import pytest

from tasks.data.schema import stable_ids
from tasks.verify.verifiers import (VERIFIERS, AnswerMatchVerifier, ArithChainVerifier, extract_answer,
                             make_verifier)

QUESTION = "Mia has 23 pens. Then gets 17 more. Then loses 9. How many pens now?"
RIGHT = " 23+17=40. 40-9=31. Answer: 31"


def prompts_frame(rows: list[tuple[str, str | None]]) -> pl.DataFrame:
    df = pl.DataFrame({"text": [t for t, _ in rows], "answer": [a for _, a in rows]},
                      schema={"text": pl.String, "answer": pl.String})
    return df.with_columns(stable_ids(df["text"]))


def samples_frame(prompts: pl.DataFrame, per_prompt: dict[int, list[str]]) -> pl.DataFrame:
    ids = prompts["prompt_id"].to_list()
    rows = [(ids[p], i, text) for p, texts in per_prompt.items() for i, text in enumerate(texts)]
    return pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String},
                        orient="row")


def verdicts(verifier, texts: list[str], question: str = QUESTION, answer: str | None = "31") -> list[bool]:
    prompts = prompts_frame([(question, answer)])
    out = verifier.verify(samples_frame(prompts, {0: texts}), prompts).sort("sample_idx")
    assert out.height == len(texts)
    return out["correct"].to_list()


CASES = {
    # name: (text, answer_match, arith_chain)
    "right chain": (RIGHT, True, True),
    "wrong arithmetic in a step": (" 23+17=40. 40-9=30. Answer: 31", True, False),
    "missing equation": (" 23+17=40. Answer: 31", True, False),
    "wrong operand order": (" 17+23=40. 40-9=31. Answer: 31", True, False),
    "step not from previous result": (" 23+17=40. 41-10=31. Answer: 31", True, False),
    "extra equation": (" 23+17=40. 40-9=31. 31+0=31. Answer: 31", True, False),
    "no Answer:": (" 23+17=40. 40-9=31.", False, False),
    "wrong answer, right chain": (" 23+17=40. 40-9=31. Answer: 30", False, False),
    "spaces around operators": (" 23 + 17 = 40 . 40 - 9 = 31 . Answer:  31 ", True, True),
    "last Answer wins": ("Answer: 30 ... 23+17=40. 40-9=31. Answer: 31", True, True),
    "last Answer wins (wrong last)": (" 23+17=40. 40-9=31. Answer: 31 Answer: 30", False, False),
    "answer with trailing .0": (" 23+17=40. 40-9=31. Answer: 31.0", True, True),
    "empty text": ("", False, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hand_written_samples(name):
    text, want_match, want_chain = CASES[name]
    assert verdicts(AnswerMatchVerifier(), [text]) == [want_match]
    assert verdicts(ArithChainVerifier(), [text]) == [want_chain]


def test_all_cases_in_one_table_keep_row_identity():
    names = list(CASES)
    texts = [CASES[n][0] for n in names]
    assert verdicts(AnswerMatchVerifier(), texts) == [CASES[n][1] for n in names]
    assert verdicts(ArithChainVerifier(), texts) == [CASES[n][2] for n in names]


def test_equation_checks_counts():
    prompts = prompts_frame([(QUESTION, "31")])
    texts = [RIGHT, " 23+17=40. Answer: 31", " 23+17=40. 40-9=31. 31+0=31. Answer: 31", "no maths here"]
    checks = ArithChainVerifier().equation_checks(samples_frame(prompts, {0: texts}), prompts).sort("sample_idx")
    assert checks["n_equations"].to_list() == [2, 1, 3, 0]
    assert checks["chain_ok"].to_list() == [True, False, False, False]


def test_commas_in_numbers_are_normalised():
    question = "Tom has 995 coins. Then gets 10 more. How many coins now?"
    texts = [" 995+10=1005. Answer: 1,005", " 995+10=1005. Answer: 1005", " 995+10=1005. Answer: 1,006"]
    assert verdicts(AnswerMatchVerifier(), texts, question, "1005") == [True, True, False]
    assert verdicts(ArithChainVerifier(), texts, question, "1005") == [True, True, False]
    # a gold answer written with a comma matches too
    assert verdicts(AnswerMatchVerifier(), texts, question, "1,005") == [True, True, False]


def test_extract_answer_expression():
    df = pl.DataFrame({"t": ["Answer: 12", "Answer:7 then Answer: 1,234", "answer: 5", "Answer: -3", "none", None]})
    got = df.select(extract_answer(pl.col("t")))["t"].to_list()
    assert got == ["12", "1234", None, "-3", None, None]


def test_python_looking_text_is_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"Answer: __import__('os').system('touch {marker}')",
        f"{{{{ open('{marker}', 'w') }}}} Answer: eval('31')",
    ]
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a) or 0)
    for verifier in (AnswerMatchVerifier(), ArithChainVerifier()):
        out = verdicts(verifier, payloads)
        assert out == [False, False, False]
    assert calls == []
    assert not marker.exists()


def test_prompt_without_samples_and_unknown_prompt():
    prompts = prompts_frame([(QUESTION, "31"), ("Tom has 5 coins. Then gets 1 more. How many coins now?", "6")])
    samples = samples_frame(prompts, {0: [RIGHT]})
    samples = pl.concat([samples, pl.DataFrame({"prompt_id": ["nope"], "sample_idx": [0], "text": [RIGHT]},
                                               schema=samples.schema)])
    for verifier in (AnswerMatchVerifier(), ArithChainVerifier()):
        out = verifier.verify(samples, prompts).sort("prompt_id")
        # one row per sample, none invented for the prompt without samples
        assert out.height == 2
        assert set(out["prompt_id"]) == {prompts["prompt_id"][0], "nope"}
        got = dict(zip(out["prompt_id"], out["correct"]))
        assert got[prompts["prompt_id"][0]] is True
        assert got["nope"] is False  # no gold answer: never correct


def test_no_samples_at_all():
    prompts = prompts_frame([(QUESTION, "31")])
    empty = samples_frame(prompts, {})
    for verifier in (AnswerMatchVerifier(), ArithChainVerifier()):
        out = verifier.verify(empty, prompts)
        assert out.height == 0
        assert {"correct", "extracted_answer"} <= set(out.columns)


def test_null_gold_answer_is_never_correct():
    assert verdicts(AnswerMatchVerifier(), [RIGHT], answer=None) == [False]
    assert verdicts(ArithChainVerifier(), [RIGHT], answer=None) == [False]


def test_output_columns_and_extra_columns_preserved():
    prompts = prompts_frame([(QUESTION, "31")])
    samples = samples_frame(prompts, {0: [RIGHT, "Answer: 30"]}).with_columns(pl.lit(0.5).alias("temperature"))
    out = ArithChainVerifier().verify(samples, prompts).sort("sample_idx")
    assert set(out.columns) == {"prompt_id", "sample_idx", "text", "temperature", "extracted_answer", "correct"}
    assert out["extracted_answer"].to_list() == ["31", "30"]
    assert out["temperature"].to_list() == [0.5, 0.5]


def test_make_verifier():
    assert {"answer_match", "arith_chain", "unit_tests"} <= set(VERIFIERS)
    assert all(cls.name == name for name, cls in VERIFIERS.items())
    assert isinstance(make_verifier("arith_chain"), ArithChainVerifier)
    assert type(make_verifier("answer_match")) is AnswerMatchVerifier
    with pytest.raises(KeyError):
        make_verifier("llm_judge")


def test_chain_check_is_per_row_even_when_keys_repeat():
    """Probe samples at several temperatures share (prompt_id, sample_idx); each row is judged alone."""
    prompts = pl.DataFrame({"prompt_id": ["p"], "text": ["Mia has 3 pens. Then gets 2 more. How many pens now?"],
                            "answer": ["5"]})
    samples = pl.DataFrame({"prompt_id": ["p"] * 4, "sample_idx": [0, 1, 0, 1],
                            "temperature": [0.5, 0.5, 1.0, 1.0],
                            "text": [" 3+2=5. Answer: 5", " 3+2=6. Answer: 5", " 3+2=5. Answer: 5", "Answer: 5"]})
    out = ArithChainVerifier().verify(samples, prompts)
    assert out["correct"].to_list() == [True, False, True, False]
    assert out["temperature"].to_list() == [0.5, 0.5, 1.0, 1.0]  # row order kept
