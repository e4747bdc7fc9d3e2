"""Deterministic generator of arithmetic word problems with gold answers (the embedded default).

A problem with `steps` operations reads e.g.
    "Mia has 23 pens. Then gets 17 more. Then loses 9. How many pens now?"
and its gold chain of thought is
    " 23+17=40. 40-9=31. Answer: 31"
Everything is built column-wise with numpy and Polars; no per-problem Python loop.
"""

from __future__ import annotations

import numpy as np
import polars as pl

NAMES = ["Mia", "Tom", "Ava", "Leo", "Zoe", "Max", "Ivy", "Sam", "Eli", "Kim"]
ITEMS = ["pens", "coins", "cards", "shells", "books", "apples", "stamps", "beads"]
ADD = ["gets {} more", "finds {} more", "buys {} more"]
SUB = ["loses {}", "gives away {}", "sells {}"]


def generate_problems(n: int, steps: int, seed: int, max_start: int = 9, max_operand: int = 9) -> pl.DataFrame:
    """`n` problems with exactly `steps` operations: columns text, answer, target, difficulty."""
    rng = np.random.default_rng([seed, steps])
    cur = rng.integers(2, max_start, size=n, endpoint=True)
    name = np.array(NAMES)[rng.integers(0, len(NAMES), n)]
    item = np.array(ITEMS)[rng.integers(0, len(ITEMS), n)]
    parts_q = [pl.Series(name) + " has " + pl.Series(cur.astype(str)) + " " + pl.Series(item) + "."]
    parts_t: list[pl.Series] = []
    for _ in range(steps):
        b = rng.integers(1, max_operand, size=n, endpoint=True)
        sub = (rng.random(n) < 0.5) & (b <= cur)  # never go below zero
        phrase_idx = rng.integers(0, 3, n)
        add_phr = np.array([p.split("{}")[0] for p in ADD])[phrase_idx]
        add_tail = np.array([p.split("{}")[1] for p in ADD])[phrase_idx]
        sub_phr = np.array([p.split("{}")[0] for p in SUB])[phrase_idx]
        sub_tail = np.array([p.split("{}")[1] for p in SUB])[phrase_idx]
        head = np.where(sub, sub_phr, add_phr)
        tail = np.where(sub, sub_tail, add_tail)
        new = np.where(sub, cur - b, cur + b)
        b_s = pl.Series(b.astype(str))
        parts_q.append(" Then " + pl.Series(head) + b_s + pl.Series(tail) + ".")
        parts_t.append(" " + pl.Series(cur.astype(str)) + pl.Series(np.where(sub, "-", "+")) + b_s
                       + "=" + pl.Series(new.astype(str)) + ".")
        cur = new
    question = _join([*parts_q, " How many " + pl.Series(item) + " now?"])
    answer = pl.Series(cur.astype(str))
    target = _join([*parts_t, " Answer: " + answer])
    return pl.DataFrame({"text": question, "answer": answer, "target": target,
                         "difficulty": pl.Series([steps] * n, dtype=pl.Int32)})


def _join(parts: list[pl.Series]) -> pl.Series:
    return pl.DataFrame({str(i): p for i, p in enumerate(parts)}).select(
        pl.concat_str(pl.all()).alias("s"))["s"]


_OPERATION = r"Then (?:gets|finds|buys|loses|gives away|sells) \d+"


def solution_chains(texts: pl.Series) -> pl.Series:
    """The generator's target for each of its questions, rebuilt from the question text alone (the grammar
    is fixed: a start, then one "Then ..." clause per step): e.g. " 23+17=40. 40-9=31. Answer: 31".
    Null where a text does not parse. Why: prepare keeps targets on seed rows only, but an arith problem's
    chain is a function of its question, so a reference solution exists for every split."""
    df = pl.DataFrame({"q": texts}, schema={"q": pl.String}).with_row_index("_r")
    ops = df.select("_r", start=pl.col("q").str.extract(r"^\S+ has (\d+) ", 1).cast(pl.Int64),
                    op=pl.col("q").str.extract_all(_OPERATION)).explode("op")
    add = pl.col("op").str.contains(r"^Then (?:gets|finds|buys) ")
    steps = (ops.with_columns(b=pl.col("op").str.extract(r"(\d+)$", 1).cast(pl.Int64))
             .with_columns(new=pl.col("start") + pl.when(add).then(pl.col("b")).otherwise(-pl.col("b"))
                           .cum_sum().over("_r"))
             .with_columns(prev=pl.col("new").shift(1).over("_r").fill_null(pl.col("start")))
             .with_columns(eq=pl.format(" {}{}{}={}.", "prev", pl.when(add).then(pl.lit("+")).otherwise(pl.lit("-")),
                                        "b", "new")))
    chains = steps.group_by("_r", maintain_order=True).agg(
        ok=pl.col("eq").is_not_null().all() & pl.col("start").is_not_null().all(), chain=pl.col("eq").str.join(""),
        answer=pl.col("new").last())
    out = df.join(chains, on="_r", how="left").sort("_r").select(
        pl.when(pl.col("ok")).then(pl.col("chain") + " Answer: " + pl.col("answer").cast(pl.String)).alias("s"))
    return out["s"]


def reference_solutions(prompts: pl.DataFrame) -> pl.DataFrame:
    """prompt_id, text: each prompt's reference solution. The stored target where there is one, else, for
    prompts of the arith source, the generator's chain rebuilt by `solution_chains` when it reaches the
    gold answer. Prompts with neither have no row (nothing is injected for them)."""
    rebuilt = pl.Series("_rebuilt", solution_chains(prompts["text"]))
    arith = (pl.col("source") == "arith") & pl.col("_rebuilt").str.ends_with(" Answer: " + pl.col("answer"))
    return (prompts.with_columns(rebuilt)
            .select("prompt_id", text=pl.coalesce(pl.col("target"), pl.when(arith).then(pl.col("_rebuilt"))))
            .filter(pl.col("text").is_not_null()).unique("prompt_id", keep="first").sort("prompt_id"))
