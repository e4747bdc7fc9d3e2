"""Stage `evaluate`: greedy pass@1 and sampled pass@k on the held-out test split."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import EvaluateConfig, GenerateConfig, VerifierConfig
from tasks.data.schema import SCORED, write_table
from tasks.metrics.samples import per_prompt, summarise
from tasks.stages.generate import sample_prompts
from tasks.stages.score import score_table
from tasks.workspace.atomic import write_json


def evaluate(model_dir: Path, prompts_path: Path, gen: GenerateConfig, cfg: EvaluateConfig,
             verifier: VerifierConfig, *, iteration: str, seed: int, out_json: Path, out_samples: Path) -> dict:
    prompts = pl.read_parquet(prompts_path)
    test = prompts.filter(pl.col("split") == "test")
    greedy = sample_prompts(model_dir, test, gen, temperature=0.0, k=1, seed=seed, iteration=iteration,
                            desc=f"evaluate {iteration} greedy", pass_name="eval-greedy")
    sampled = sample_prompts(model_dir, test, gen, temperature=cfg.temperature, k=cfg.k, seed=seed,
                             iteration=iteration, desc=f"evaluate {iteration} pass@{cfg.k}", pass_name="eval-sampled")
    # sampled rows come after the greedy one, so sample_idx stays unique per prompt
    sampled = sampled.with_columns(pl.col("sample_idx") + 1)
    scored = score_table(pl.concat([greedy, sampled]), test, verifier.for_evaluation())  # always against gold
    write_table(scored, out_samples, SCORED)
    g = scored.filter(pl.col("pass_name") == "eval-greedy")
    s = summarise(scored.filter(pl.col("pass_name") == "eval-sampled"), cfg.k)
    by_diff = (per_prompt(g).join(test.select("prompt_id", "difficulty"), on="prompt_id")
               .group_by("difficulty").agg(pl.col("c").mean().round(6)).sort("difficulty"))
    result = {
        "pass@1": round(float(g["correct"].mean()), 6),
        "pass@1_sampled": s["pass@1"],
        f"pass@{cfg.k}": s[f"pass@{cfg.k}"],
        "n_test": test.height,
        "pass@1_by_difficulty": {str(d): v for d, v in by_diff.iter_rows() if d is not None},
    }
    write_json(out_json, result)
    return result
