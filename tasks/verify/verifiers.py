"""Verifiers: decide which samples are correct. Answers are parsed, never evaluated; only the
`unit_tests` verifier runs model code, and only in a contained child process (tasks/verify/sandbox/run.py).

A verifier sees the whole table at once (all K samples of every prompt), so label-free
verifiers such as majority vote fit the same interface.
"""

from __future__ import annotations

from typing import Protocol

import polars as pl

from tasks.config.recipe import VerifierConfig
from tasks.verify.answers import ANSWER, extract_answer  # noqa: F401 - ANSWER and extract_answer are used from here
from tasks.verify.answers import normalise_number as _normalise_number
from tasks.verify.chain_verifier import FreeTextArithVerifier
from tasks.verify.code_verifier import CodeTestsVerifier
from tasks.verify.majority_vote import MajorityVoteVerifier
from tasks.verify.math_verifier import MathVerifier

EQUATION = r"(\d+)\s*([+\-])\s*(\d+)\s*=\s*(-?\d+)"
KEY = ["prompt_id", "sample_idx"]


class Verifier(Protocol):
    name: str

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        """Return `samples` plus columns `correct` (bool) and `extracted_answer` (str or null).

        `prompts` has prompt_id, text and answer (gold, may be null)."""
        ...


class AnswerMatchVerifier:
    """Correct when the extracted final answer equals the gold answer."""

    name = "answer_match"

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        gold = prompts.select("prompt_id", _normalise_number(pl.col("answer")).alias("_gold"))
        out = samples.join(gold, on="prompt_id", how="left", maintain_order="left").with_columns(
            extracted_answer=extract_answer(pl.col("text")))
        return out.with_columns(
            correct=(pl.col("extracted_answer") == pl.col("_gold")).fill_null(False)).drop("_gold")


class ArithChainVerifier(AnswerMatchVerifier):
    """Answer match plus a process check of the chain of thought, as in RFT's rejection sampling.

    A sample passes only if every `a+b=c` / `a-b=c` is arithmetically right, there are exactly
    (numbers in the question - 1) equations, and they use the question's numbers in order,
    each step starting from the previous result.
    """

    name = "arith_chain"

    def equation_checks(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        """Per row of `samples`, in order: prompt_id, sample_idx, n_equations and chain_ok. Rows are
        keyed by position, so tables that repeat (prompt_id, sample_idx), such as probe samples at
        several temperatures, are judged row by row."""
        row = ["_row"]
        qnums = prompts.select("prompt_id", pl.col("text").str.extract_all(r"\d+")
                               .cast(pl.List(pl.Int64), strict=False).alias("_q"))
        rows = samples.select(*KEY, "text").with_row_index("_row")
        eqs = (rows.select("_row", "prompt_id", pl.col("text").str.extract_all(EQUATION).alias("_eq"))
               .explode("_eq").drop_nulls("_eq")
               .with_columns(_j=pl.int_range(pl.len()).over(row))
               .with_columns(*[pl.col("_eq").str.extract(EQUATION, i).alias(n) for i, n in
                               ((1, "_a"), (2, "_op"), (3, "_b"), (4, "_c"))])
               .with_columns(pl.col("_a", "_b", "_c").cast(pl.Int64, strict=False))
               .join(qnums, on="prompt_id", how="left")
               .with_columns(_prev=pl.col("_c").shift(1).over(row, order_by="_j")))
        ok = (pl.when(pl.col("_op") == "+").then(pl.col("_a") + pl.col("_b"))
              .otherwise(pl.col("_a") - pl.col("_b")) == pl.col("_c"))
        start_ok = pl.when(pl.col("_j") == 0).then(pl.col("_a") == pl.col("_q").list.first()) \
            .otherwise(pl.col("_a") == pl.col("_prev"))
        operand_ok = pl.col("_b") == pl.col("_q").list.get(pl.col("_j") + 1, null_on_oob=True)
        eqs = eqs.with_columns(_ok=(ok & start_ok & operand_ok).fill_null(False))
        per_row = eqs.group_by(row).agg(n_equations=pl.len().cast(pl.Int32), _all_ok=pl.col("_ok").all())
        n_eq = pl.col("n_equations").fill_null(0)
        return (rows.select("_row", *KEY).join(qnums, on="prompt_id", how="left", maintain_order="left")
                .join(per_row, on=row, how="left", maintain_order="left")
                .sort("_row")
                .select(*KEY, n_equations=n_eq.cast(pl.Int32),
                        chain_ok=pl.col("_all_ok").fill_null(False) & (n_eq == pl.col("_q").list.len() - 1)))

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        out = super().verify(samples, prompts)  # keeps the row order of `samples`
        return out.with_columns(correct=pl.col("correct") & self.equation_checks(samples, prompts)["chain_ok"])


class NoVerifier:
    """Verifier `none`, for tasks with nothing to check against: no sample is correct here. The judge
    (reward source `judge`, required with it) gives the verdict in the score stage instead."""

    name = "none"

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        del prompts  # gold is never read
        return samples.with_columns(extracted_answer=extract_answer(pl.col("text")), correct=pl.lit(False))


VERIFIERS: dict[str, type] = {"answer_match": AnswerMatchVerifier, "arith_chain": ArithChainVerifier,
                              "unit_tests": CodeTestsVerifier, "math_verify": MathVerifier,
                              "arith_free": FreeTextArithVerifier, "none": NoVerifier}

VERIFIERS["majority_vote"] = MajorityVoteVerifier


def make_verifier(name: str, config: VerifierConfig | None = None) -> Verifier:
    """A verifier by name; one with settings (e.g. unit_tests' sandbox limits) reads them from `config`."""
    cls = VERIFIERS[name]
    from_config = getattr(cls, "from_config", None)
    return from_config(config) if config is not None and from_config is not None else cls()
