"""Stage `select`: keep samples above the threshold, dedup per prompt, cap, write chat examples;
or (mode `pairs`) build chosen/rejected preference pairs per prompt for DPO."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from tasks.config.recipe import SelectConfig
from tasks.data.schema import MESSAGE, PAIRS, SELECTED, write_table
from tasks.verify.verifiers import EQUATION


def dedup_key(cfg: SelectConfig) -> pl.Expr:
    """Exact text, or the sequence of equations (so wording-only variants count once)."""
    if cfg.dedup == "equations":
        return pl.col("text").str.extract_all(EQUATION).list.join("|").str.replace_all(r"\s+", "")
    return pl.col("text")


def with_reference(scored: pl.DataFrame, reference: pl.DataFrame, score: float, by: tuple[str, ...] = ()
                   ) -> pl.DataFrame:
    """`scored` plus, for every (`by`..., prompt_id) present in it that has a reference solution
    (`reference`: prompt_id, text), that solution as one more candidate: correct, scoring `score`,
    sample_idx -1, origin "reference". An identical sampled text merges into it under exact dedup and
    the reference's copy decides (it sorts first). The B-STaR reference code's injection."""
    keys = scored.select(*by, "prompt_id").unique()
    ref = keys.join(reference.select("prompt_id", "text"), on="prompt_id", how="inner").with_columns(
        sample_idx=pl.lit(-1, dtype=scored.schema.get("sample_idx", pl.Int32)), correct=pl.lit(True),
        score=pl.lit(float(score), dtype=pl.Float64), origin=pl.lit("reference"))
    return pl.concat([scored, ref], how="diagonal_relaxed")


def select_table(scored: pl.DataFrame, prompts: pl.DataFrame, cfg: SelectConfig, threshold: float,
                 reference: pl.DataFrame | None = None, reference_score: float = 1.0) -> pl.DataFrame:
    """With `reference` (calibrate.inject_reference train), each prompt's reference solution is a
    candidate like the samples, before threshold, dedup and cap (origin "reference")."""
    if reference is not None:
        scored = with_reference(scored, reference, reference_score)
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
        (pl.col("origin").fill_null("self") if "origin" in kept.columns else pl.lit("self")).alias("origin"),
    )


def _candidates(scored: pl.DataFrame, cfg: SelectConfig, threshold: float) -> pl.DataFrame:
    """Per sample: `_cv` (its value as a chosen sample, null when it cannot be one) and `_rv` (as rejected).

    correct_vs_incorrect: correct samples above the threshold against incorrect ones, valued by score.
    vote (ScPO): samples of the most-voted answer against samples of other answers (or none), valued by
    their answer's share of the prompt's samples; ties for most-voted go to the lowest sample_idx."""
    if cfg.pairs.strategy == "correct_vs_incorrect":
        return scored.with_columns(
            _cv=pl.when(pl.col("correct") & (pl.col("score") > threshold)).then(pl.col("score")),
            _rv=pl.when(~pl.col("correct")).then(pl.col("score")))
    share = pl.when(pl.col("extracted_answer").is_null()).then(0.0).otherwise(
        pl.len().over("prompt_id", "extracted_answer") / pl.len().over("prompt_id"))
    first = pl.col("sample_idx").min().over("prompt_id", "extracted_answer")
    ranked = scored.with_columns(_share=share, _first=first).with_columns(
        _top=pl.struct(pl.col("_share").neg(), "_first").rank("dense").over("prompt_id") == 1)
    top = pl.col("_top") & pl.col("extracted_answer").is_not_null()
    return ranked.with_columns(_cv=pl.when(top).then(pl.col("_share")),
                               _rv=pl.when(~top).then(pl.col("_share")))


def pairs_table(scored: pl.DataFrame, prompts: pl.DataFrame, cfg: SelectConfig, threshold: float) -> pl.DataFrame:
    """Chosen/rejected pairs: each side deduplicated per prompt and ranked (chosen best first, rejected worst
    first, then sample_idx); pairs go in order of rank sum (the best chosen against the worst rejected
    first), at least `min_margin` apart, at most `max_per_prompt` per prompt."""
    cand = _candidates(scored, cfg, threshold).with_columns(_key=dedup_key(cfg))

    def side(value: str, best_first: bool) -> pl.DataFrame:
        return (cand.filter(pl.col(value).is_not_null())
                .sort(["prompt_id", value, "sample_idx"], descending=[False, best_first, False])
                .unique(["prompt_id", "_key"], keep="first", maintain_order=True)
                .with_columns(_rank=pl.int_range(pl.len()).over("prompt_id"))
                .select("prompt_id", "sample_idx", "text", value, "_rank"))

    chosen, rejected = side("_cv", True), side("_rv", False)
    pairs = (chosen.join(rejected, on="prompt_id", suffix="_r")
             .filter(pl.col("text").str.strip_chars_end() != pl.col("text_r").str.strip_chars_end())
             .with_columns(margin=pl.col("_cv") - pl.col("_rv"))
             .filter(pl.col("margin") >= cfg.pairs.min_margin)
             .sort(["prompt_id", pl.col("_rank") + pl.col("_rank_r"), "_rank"])
             .group_by("prompt_id", maintain_order=True).head(cfg.pairs.max_per_prompt))
    questions = prompts.select("prompt_id", prompt=pl.col("text"))
    return pairs.join(questions, on="prompt_id", how="left").select(
        "prompt_id", "prompt", chosen=pl.col("text").str.strip_chars_end(),
        rejected=pl.col("text_r").str.strip_chars_end(), chosen_idx="sample_idx", rejected_idx="sample_idx_r",
        margin=pl.col("margin").round(9))


def select(scored_path: Path, prompts_path: Path, cfg: SelectConfig, threshold: float, out_path: Path,
           reference: pl.DataFrame | None = None, reference_score: float = 1.0,
           view: Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame] | None = None) -> Path:
    """`view(scored, prompts)`: the rows and scores to select from, when not the scored table's own
    (calibrate.fidelity reference selects on the reference code's view)."""
    scored = pl.read_parquet(scored_path)
    prompts = pl.read_parquet(prompts_path)
    if view is not None:
        scored = view(scored, prompts)
    if cfg.mode == "pairs":
        return write_table(pairs_table(scored, prompts, cfg, threshold), out_path, PAIRS)
    return write_table(select_table(scored, prompts, cfg, threshold, reference, reference_score), out_path, SELECTED)
