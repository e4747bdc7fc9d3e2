"""Reward source `judge`: the policy scores its own samples from 1 to 5, as in Self-Rewarding.

Each sample becomes one judge prompt (the recipe's template with the question and the answer put
in by plain replacement), answered by the parent model, the one that wrote the samples. The score
is the one group of `reward.judge.pattern` matched on the reply and cast to an integer: never
evaluated, and a reply it does not match, or a number outside 1-5, gets no score (reward null).
The replies are a table of their own (`judged.parquet`), versioned like the samples; with the judge
off the table is empty, so every iteration has the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import GenerateConfig, JudgeConfig, RewardConfig
from tasks.data.schema import JUDGED, write_table

SEP = "#"  # judge request id: "<prompt_id>#<sample_idx>" (prompt ids are hex)


def judge_requests(samples: pl.DataFrame, prompts: pl.DataFrame, cfg: JudgeConfig) -> pl.DataFrame:
    """One prompt per sample: prompt_id is the request id, text the filled template."""
    questions = prompts.select("prompt_id", _q=pl.col("text"))
    # the answer goes in last, so a sample that writes "{question}" is never expanded
    return (samples.join(questions, on="prompt_id", how="left", maintain_order="left")
            .with_columns(_t=pl.lit(cfg.prompt, pl.String)).select(
                prompt_id=pl.concat_str("prompt_id", pl.lit(SEP), pl.col("sample_idx").cast(pl.String)),
                text=pl.col("_t").str.replace_all("{question}", pl.col("_q").fill_null(""), literal=True)
                .str.replace_all("{answer}", pl.col("text").str.strip_chars(), literal=True)))


def parse_scores(replies: pl.Expr, pattern: str) -> pl.Expr:
    """The score from each reply: the pattern's group as an integer when it is 1-5, else null."""
    n = replies.str.extract(pattern, 1).str.strip_chars().cast(pl.Int32, strict=False)
    return pl.when(n.is_between(1, 5)).then(n).otherwise(None).cast(pl.Int32)


def judge_table(model_dir: Path, samples: pl.DataFrame, prompts: pl.DataFrame, gen: GenerateConfig,
                cfg: JudgeConfig, *, seed: int, iteration: str) -> pl.DataFrame:
    from tasks.stages.generate import sample_prompts

    if samples.height == 0:
        return pl.DataFrame(schema=JUDGED.schema)
    requests = judge_requests(samples, prompts, cfg)
    replies = sample_prompts(model_dir, requests, gen.model_copy(update={"max_new_tokens": cfg.max_new_tokens}),
                             temperature=cfg.temperature, k=1, seed=seed, iteration=iteration,
                             desc=f"judge {iteration}", pass_name="judge")
    ids = pl.col("prompt_id").str.split(SEP)
    return replies.select(
        prompt_id=ids.list.first(), sample_idx=ids.list.last().cast(pl.Int32),
        text="text", judge_score=parse_scores(pl.col("text"), cfg.pattern),
        n_tokens="n_tokens", finish_reason="finish_reason", seed="seed", model_hash="model_hash")


def judge(model_dir: Path, samples_path: Path, prompts_path: Path, gen: GenerateConfig, reward: RewardConfig, *,
          seed: int, iteration: str, out_path: Path) -> Path:
    """The judged table: the parent's verdict per sample, or an empty table when the judge is off."""
    if reward.source != "judge":
        return write_table(pl.DataFrame(schema=JUDGED.schema), out_path, JUDGED)
    samples, prompts = pl.read_parquet(samples_path), pl.read_parquet(prompts_path)
    return write_table(judge_table(model_dir, samples, prompts, gen, reward.judge, seed=seed, iteration=iteration),
                       out_path, JUDGED)


def add_judge_rewards(scored: pl.DataFrame, judged: pl.DataFrame, cfg: RewardConfig) -> pl.DataFrame:
    """reward = (judge score - 3) / 2, in [-1, 1] like a reward model's; score = correct + weight * reward."""
    rewards = judged.select("prompt_id", "sample_idx", _r=(pl.col("judge_score").cast(pl.Float64) - 3) / 2)
    out = scored.drop("reward").join(rewards, on=["prompt_id", "sample_idx"], how="left", maintain_order="left") \
        .rename({"_r": "reward"})
    from tasks.stages.reward import with_score

    return with_score(out, cfg)


def add_judge_verdicts(scored: pl.DataFrame, judged: pl.DataFrame, cfg: RewardConfig) -> pl.DataFrame:
    """Verifier `none`: the judge's 1-5 is the score itself, so select's threshold applies to it; a sample
    without a parsable score gets 0, below every threshold the recipe checks allow. Correct means the judge
    gave at least `judge.accept` (what the pool metrics and the gate count); the reward is as above."""
    verdict = judged.select("prompt_id", "sample_idx", _s=pl.col("judge_score").cast(pl.Float64))
    return (scored.drop("reward").join(verdict, on=["prompt_id", "sample_idx"], how="left", maintain_order="left")
            .with_columns(correct=(pl.col("_s") >= cfg.judge.accept).fill_null(False),
                          reward=(pl.col("_s") - 3) / 2, score=pl.col("_s").fill_null(0.0))
            .drop("_s"))
