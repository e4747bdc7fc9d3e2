"""Verifier `arith_free`: arithmetic word problems answered in free text by a real chat model.

A pretrained model does not write the tiny preset's `a+b=c. Answer: n` chains; it writes
"She buys 3 more, so she has 7 + 3 = 10 pens." This verifier checks what such a chain can be held
to: the final answer equals the gold, the chain shows its work (at least one equation), and every
equation it writes is arithmetically right, so a right answer reached through a wrong step fails.
Expressions are parsed by a small arithmetic parser over the distinct expressions, never evaluated
as code; extraction and the joins are Polars.
"""

from __future__ import annotations

import re

import polars as pl

NUM = r"-?\d[\d,]*(?:\.\d+)?"
OP = r"[+\-*/×÷]"
# An equation: a number, one or more (operator, number) pairs, '=', a number. '$' and spaces allowed.
EQUATION = rf"(\$?{NUM}(?:\s*{OP}\s*\$?{NUM})+)\s*=\s*\$?({NUM})"
# The final answer: the last \boxed{n}, else the last "answer is n" / "Answer: n", else the last number.
BOXED = rf"\\boxed\{{\s*({NUM})\s*\}}"
STATED = rf"(?i)answer(?:\s+is)?\s*:?\s*\$?\s*({NUM})"
LAST_NUMBER = rf"({NUM})"
_TOKEN = re.compile(rf"\d[\d,]*(?:\.\d+)?|{OP}")
KEY = ["prompt_id", "sample_idx"]


def _number(s: str) -> float:
    return float(s.replace(",", "").replace("$", ""))


def evaluate_expression(expr: str) -> float | None:
    """Value of `3 + 4 * 2 - 1` with the usual precedence; None when it does not parse (or / 0)."""
    tokens = _TOKEN.findall(expr.replace("$", ""))
    if len(tokens) < 3 or len(tokens) % 2 == 0:
        return None
    terms: list[float] = [_number(tokens[0])]
    signs: list[float] = [1.0]
    for op, num in zip(tokens[1::2], tokens[2::2]):
        if not num[0].isdigit():
            return None
        x = _number(num)
        if op in "+-":
            terms.append(x)
            signs.append(1.0 if op == "+" else -1.0)
        elif op in "*×":
            terms[-1] *= x
        elif x == 0:
            return None
        else:
            terms[-1] /= x
    return sum(s * t for s, t in zip(signs, terms))


def _normalise(col: pl.Expr) -> pl.Expr:
    return col.str.replace_all(r"[,$\s]", "").str.replace(r"\.0+$", "")


def extract_final_answer(text: pl.Expr) -> pl.Expr:
    """The final answer a free-text sample states, normalised ('1,200.0' -> '1200')."""
    last = [text.str.extract_all(p).list.last().str.extract(p, 1) for p in (BOXED, STATED, LAST_NUMBER)]
    return _normalise(pl.coalesce(last))


def equation_checks(samples: pl.DataFrame) -> pl.DataFrame:
    """Per row of `samples`, in order: n_equations and whether every equation holds."""
    rows = samples.select("text").with_row_index("_row")
    eqs = (rows.select("_row", pl.col("text").str.extract_all(EQUATION).alias("_eq"))
           .explode("_eq").drop_nulls("_eq")
           .select("_row", lhs=pl.col("_eq").str.extract(EQUATION, 1), rhs=pl.col("_eq").str.extract(EQUATION, 2)))
    distinct = eqs.select("lhs").unique(maintain_order=True)
    values = distinct.with_columns(_value=pl.Series([evaluate_expression(e) for e in distinct["lhs"]],
                                                    dtype=pl.Float64))
    rhs = pl.col("rhs").str.replace_all(",", "").cast(pl.Float64, strict=False)
    checked = (eqs.join(values, on="lhs", how="left")
               .with_columns(_ok=((pl.col("_value") - rhs).abs() < 1e-6).fill_null(False)))
    per_row = checked.group_by("_row").agg(n_equations=pl.len().cast(pl.Int32), chain_ok=pl.col("_ok").all())
    return (rows.select("_row").join(per_row, on="_row", how="left").sort("_row")
            .select(pl.col("n_equations").fill_null(0), pl.col("chain_ok").fill_null(False)))


class FreeTextArithVerifier:
    """Correct when the stated final answer equals the gold and every written equation holds."""

    name = "arith_free"

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        gold = prompts.select("prompt_id", _normalise(pl.col("answer").cast(pl.String)).alias("_gold"))
        out = samples.join(gold, on="prompt_id", how="left", maintain_order="left").with_columns(
            extracted_answer=extract_final_answer(pl.col("text")))
        checks = equation_checks(samples)
        answer_ok = (pl.col("extracted_answer") == pl.col("_gold")).fill_null(False)
        return out.with_columns(correct=answer_ok & checks["chain_ok"]).drop("_gold")
