"""A scored table as the B-STaR reference code sees it (calibrate.fidelity `reference`).

The reference (hkust-nlp/B-STaR a0f5d95, train_code/metric_modiacc_auto.py) scores a sample
`prm_score / 5.0 + orm_score`, where orm_score is 1.0 when the sample's final answer equals the
official solution's as a string, and skips samples that state no final answer. This project's
verifiers may ask more (arith_chain also checks every equation), so the reference's choice is
reproduced on this view of the table, never on the scored table itself.
"""

from __future__ import annotations

import polars as pl

from tasks.verify.answers import normalise_number

def _fifth(reward: pl.Series) -> pl.Series:
    return pl.Series(reward.name, reward.cast(pl.Float64).fill_null(0.0).to_numpy() / 5.0, dtype=pl.Float64)


def reward_fifth(reward: pl.Expr) -> pl.Expr:
    """reward / 5 in float64, a null reward 0. In numpy: Polars computes `x / 5.0` as `x * 0.2`, which is
    one ulp off for about one float32 reward in six, so it would not be the reference's division."""
    return reward.map_batches(_fifth, return_dtype=pl.Float64)


# verifiers whose extracted_answer is a stated final answer the gold can be string-matched against
ANSWER_VERIFIERS = frozenset({"answer_match", "arith_chain"})


def reference_view(scored: pl.DataFrame, prompts: pl.DataFrame, verifier_type: str) -> pl.DataFrame:
    """`scored` with the reference's candidates and scores.

    - For a final-answer verifier (ANSWER_VERIFIERS), a sample with no final answer is not a candidate
      (metric_modiacc_auto.py 93): it keeps its row, so its prompt still gets the injected reference
      solution as in the reference (104), but scores -inf, below every threshold. `correct` is the
      string match of its answer with the gold (97-99). Other verifiers (unit tests, math-verify,
      majority vote) keep their verdict: the reference has no rule for them.
    - score = correct + reward / 5, in float64 (101); a null reward counts 0.
    """
    score = pl.col("correct").cast(pl.Float64) + reward_fifth(pl.col("reward"))
    if verifier_type not in ANSWER_VERIFIERS:
        return scored.with_columns(score=score)
    gold = prompts.select("prompt_id", _gold=normalise_number(pl.col("answer").cast(pl.String)))
    return (scored.join(gold, on="prompt_id", how="left", maintain_order="left")
            .with_columns(correct=(pl.col("extracted_answer") == pl.col("_gold")).fill_null(False))
            .with_columns(score=pl.when(pl.col("extracted_answer").is_null()).then(float("-inf")).otherwise(score))
            .drop("_gold"))
