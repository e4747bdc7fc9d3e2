"""Per-iteration sample metrics over the scored table (vectorised with Polars)."""

from __future__ import annotations

import polars as pl

from tasks.metrics.passk import pass_at_k


def per_prompt(scored: pl.DataFrame) -> pl.DataFrame:
    """One row per prompt: n samples, c correct, distinct correct texts, truncations, tokens."""
    return scored.group_by("prompt_id").agg(
        n=pl.len(),
        c=pl.col("correct").sum(),
        distinct_correct=pl.col("text").filter(pl.col("correct")).n_unique(),
        truncated=(pl.col("finish_reason") == "length").sum(),
        tokens=pl.col("n_tokens").sum(),
    ).sort("prompt_id")


def summarise(scored: pl.DataFrame, k: int) -> dict[str, float | int]:
    """pass@1, pass@k (unbiased), coverage, distinct-correct ratio, truncation and length."""
    pp = per_prompt(scored)
    if pp.height == 0:
        return {"n_prompts": 0, "n_samples": 0}
    n, c = pp["n"].to_numpy(), pp["c"].to_numpy()
    total_c = int(c.sum())
    return {
        "n_prompts": pp.height,
        "n_samples": int(n.sum()),
        "pass@1": round(float((c / n).mean()), 6),
        f"pass@{k}": round(float(pass_at_k(n, c, k)[n >= k].mean()) if (n >= k).any() else float("nan"), 6),
        "coverage": round(float((c > 0).mean()), 6),
        "distinct_correct_ratio": round(int(pp["distinct_correct"].sum()) / total_c, 6) if total_c else 0.0,
        "truncation_rate": round(int(pp["truncated"].sum()) / int(n.sum()), 6),
        "mean_tokens": round(int(pp["tokens"].sum()) / int(n.sum()), 3),
    }
