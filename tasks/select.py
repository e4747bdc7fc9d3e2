"""Stage `select`: keep samples above the threshold, dedup per prompt, cap, write chat examples."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config import SelectConfig
from tasks.schema import MESSAGE, SELECTED, write_table
from tasks.verifiers import EQUATION


def dedup_key(cfg: SelectConfig) -> pl.Expr:
    """Exact text, or the sequence of equations (so wording-only variants count once)."""
    if cfg.dedup == "equations":
        return pl.col("text").str.extract_all(EQUATION).list.join("|").str.replace_all(r"\s+", "")
    return pl.col("text")


def select_table(scored: pl.DataFrame, prompts: pl.DataFrame, cfg: SelectConfig, threshold: float) -> pl.DataFrame:
    kept = (scored.filter(pl.col("score") > threshold)
            .with_columns(_key=dedup_key(cfg))
            .sort(["prompt_id", "score", "sample_idx"], descending=[False, True, False])
            .unique(["prompt_id", "_key"], keep="first", maintain_order=True)
            .group_by("prompt_id", maintain_order=True).head(cfg.cap_per_prompt))
    questions = prompts.select("prompt_id", pl.col("text").alias("_question"))
    return kept.join(questions, on="prompt_id", how="left").select(
        "prompt_id", "sample_idx", "score",
        pl.concat_list(pl.struct(role=pl.lit("user"), content=pl.col("_question")),
                       pl.struct(role=pl.lit("assistant"), content=pl.col("text").str.strip_chars_end()))
        .cast(pl.List(MESSAGE)).alias("messages"),
        pl.lit("self").alias("origin"),
    )


def select(scored_path: Path, prompts_path: Path, cfg: SelectConfig, threshold: float, out_path: Path) -> Path:
    scored = pl.read_parquet(scored_path)
    prompts = pl.read_parquet(prompts_path)
    return write_table(select_table(scored, prompts, cfg, threshold), out_path, SELECTED)
