"""Stage `calibrate`: choose this iteration's sampling temperature and reward threshold (B-STaR).

Balancing on: sample the probe set at every temperature of the grid, score it, sweep the
threshold grid and keep the pair with the highest balance score; the whole grid is stored.
Balancing off: the recipe's fixed pair (STaR / online RFT behaviour), stored the same way.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import Recipe
from tasks.data.schema import CALIBRATION, write_table
from tasks.workspace.atomic import write_json


def fixed_choice(recipe: Recipe) -> tuple[pl.DataFrame, dict]:
    choice = {"temperature": recipe.generate.temperature, "threshold": recipe.select.threshold,
              "calibrated": False}
    grid = pl.DataFrame([{"temperature": choice["temperature"], "threshold": choice["threshold"],
                          "balance_score": None, "pass_at_k": None, "distinct_ratio": None, "n_selected": None,
                          "chosen": True}], schema=CALIBRATION.schema)
    return grid, choice


def probe_scores(recipe: Recipe, model_dir: Path, prompts: pl.DataFrame, reward_dir: Path | None, *,
                 iteration: str, seed: int) -> pl.DataFrame:
    """K samples per probe prompt at each grid temperature, verified and rewarded like training samples."""
    from tasks.stages.generate import sample_prompts
    from tasks.stages.reward import add_rewards
    from tasks.stages.score import score_table

    probe = prompts.filter(pl.col("split") == "probe")
    parts = [sample_prompts(model_dir, probe, recipe.generate, temperature=t, k=recipe.calibrate.k, seed=seed,
                            iteration=iteration, desc=f"calibrate {iteration} T={t}", pass_name="probe")
             for t in recipe.calibrate.temperatures]
    scored = score_table(pl.concat(parts), probe, recipe.verifier)
    return add_rewards(scored, probe, reward_dir, recipe.reward)


def calibrate(recipe: Recipe, model_dir: Path, prompts_path: Path, reward_dir: Path | None, *, iteration: str,
              seed: int, out_table: Path, out_choice: Path) -> dict:
    if not recipe.calibrate.enabled:
        grid, choice = fixed_choice(recipe)
    else:
        from tasks.metrics.calibration_grid import calibration_grid, choose

        scored = probe_scores(recipe, model_dir, pl.read_parquet(prompts_path), reward_dir, iteration=iteration,
                              seed=seed)
        grid = calibration_grid(scored, recipe.calibrate.thresholds, n_star=recipe.calibrate.n_star,
                                k=recipe.calibrate.k)
        choice = {**choose(grid), "calibrated": True}
    write_table(grid, out_table, CALIBRATION)
    write_json(out_choice, choice)
    return choice
