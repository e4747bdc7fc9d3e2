"""Stage `score`: verifier correctness, optional reward-model score, and the combined score."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import RewardConfig, VerifierConfig
from tasks.data.schema import SCORED, write_table
from tasks.stages.reward import add_rewards
from tasks.verify.verifiers import make_verifier


def score_table(samples: pl.DataFrame, prompts: pl.DataFrame, verifier: VerifierConfig) -> pl.DataFrame:
    """Add correct, extracted_answer, reward (null without a reward model) and score.

    score = correct + reward / 5 as in B-STaR; without a reward it is just correct (0 or 1).
    """
    scored = make_verifier(verifier.type, verifier).verify(samples, prompts.select("prompt_id", "text", "answer"))
    return scored.with_columns(reward=pl.lit(None, pl.Float64)).with_columns(
        score=pl.col("correct").cast(pl.Float64) + (pl.col("reward") / 5).fill_null(0.0))


def score(samples_path: Path, prompts_path: Path, verifier: VerifierConfig, reward: RewardConfig,
          reward_dir: Path | None, out_path: Path, judged_path: Path | None = None) -> Path:
    """The scored table in one process (tasks/placement/shards.py computes the same table as shards). With reward
    source `judge`, the rewards come from the judged table (tasks/stages/judge.py) at `judged_path`; with verifier
    `none` too, the judge's score is the sample's score."""
    samples = pl.read_parquet(samples_path)
    prompts = pl.read_parquet(prompts_path)
    if reward.source == "judge":
        from tasks.stages.judge import add_judge_rewards, add_judge_verdicts

        # no verifier: the judge's verdict is the score; else it refines the verifier's
        add = add_judge_verdicts if verifier.type == "none" else add_judge_rewards
        scored = add(score_table(samples, prompts, verifier), pl.read_parquet(judged_path), reward)
    else:
        scored = add_rewards(score_table(samples, prompts, verifier), prompts, reward_dir, reward)
    return write_table(scored, out_path, SCORED)
