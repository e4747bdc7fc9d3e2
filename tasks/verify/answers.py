"""Final answers of arithmetic samples: the number after the last 'Answer:', normalised (never evaluated).

Shared by the gold verifiers (tasks/verify/verifiers.py) and majority vote (tasks/verify/majority_vote.py)."""

from __future__ import annotations

import polars as pl

ANSWER = r"Answer:\s*(-?\d[\d,]*(?:\.\d+)?)"


def normalise_number(col: pl.Expr) -> pl.Expr:
    return col.str.replace_all(",", "").str.strip_chars().str.replace(r"\.0+$", "")


def extract_answer(text: pl.Expr) -> pl.Expr:
    """The number after the last 'Answer:' in the sample."""
    return normalise_number(text.str.extract_all(ANSWER).list.last().str.extract(ANSWER, 1))
