"""Stage `calibrate`: choose this iteration's sampling temperature and reward threshold (B-STaR).

Balancing on: sample the probe set at every temperature of the grid, score it, sweep the
threshold grid and keep the pair with the highest balance score; the whole grid is stored.
Balancing off: the recipe's fixed pair (STaR / online RFT behaviour), stored the same way.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import CalibrateConfig, Recipe
from tasks.data.schema import CALIBRATION, CALIBRATION_OPTIONS, write_table
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


def reference_for(cfg: CalibrateConfig, prompts: pl.DataFrame) -> pl.DataFrame | None:
    """The reference solutions the balance computations inject (None unless inject_reference is on)."""
    if cfg.inject_reference == "none":
        return None
    from tasks.data.arith import reference_solutions

    return reference_solutions(prompts)


def option_record(cfg: CalibrateConfig, set_name: str) -> dict[str, str] | None:
    """What calibration tables record beside the grid; None (the old 7 columns) for the default options."""
    if not cfg.reference_options():
        return None
    return {"set": set_name, "average_over": cfg.average_over, "threshold_from": cfg.threshold_from,
            "inject_reference": cfg.inject_reference}


def grid_for(scored: pl.DataFrame, cfg: CalibrateConfig, reference: pl.DataFrame | None, *, k: int,
             set_name: str) -> pl.DataFrame:
    from tasks.metrics.calibration_grid import calibration_grid

    return calibration_grid(scored, cfg.thresholds, n_star=cfg.n_star, k=k, average_over=cfg.average_over,
                            reference=reference, reference_score=cfg.reference_score,
                            record=option_record(cfg, set_name))


def calibrate(recipe: Recipe, model_dir: Path, prompts_path: Path, reward_dir: Path | None, *, iteration: str,
              seed: int, out_table: Path, out_choice: Path) -> dict:
    cfg = recipe.calibrate
    if not cfg.enabled:
        grid, choice = fixed_choice(recipe)
    else:
        from tasks.metrics.calibration_grid import choose

        prompts = pl.read_parquet(prompts_path)
        scored = probe_scores(recipe, model_dir, prompts, reward_dir, iteration=iteration, seed=seed)
        reference = reference_for(cfg, prompts.filter(pl.col("split") == "probe"))
        grid = grid_for(scored, cfg, reference, k=cfg.k, set_name="probe")
        choice = {**choose(grid), "calibrated": True, **cfg.reference_options()}  # options only when not default
    write_table(grid, out_table, CALIBRATION_OPTIONS if "set" in grid.columns else CALIBRATION)
    write_json(out_choice, choice)
    return choice


def select_threshold(scored: pl.DataFrame | None, prompts: pl.DataFrame, recipe: Recipe, choice: dict
                     ) -> tuple[pl.DataFrame, dict]:
    """The threshold select applies, and the full-set grid behind it.

    threshold_from probe: the probe's (choice.json), and an empty grid. full (the B-STaR reference code):
    keep the probe's temperature, sweep the thresholds on the iteration's whole scored set (every row,
    at the chosen temperature) and take the best (ties: the higher threshold); the grid is recorded
    with set "full" and exactly one chosen row."""
    cfg = recipe.calibrate
    probe = {"threshold": choice["threshold"], "from": "probe", "probe_threshold": choice["threshold"],
             "balance_score": choice.get("balance_score")}
    if cfg.threshold_from == "probe" or not cfg.enabled:
        return pl.DataFrame(schema=CALIBRATION.schema), probe
    from tasks.metrics.calibration_grid import choose

    full = scored.with_columns(temperature=pl.lit(float(choice["temperature"]), dtype=pl.Float64))
    grid = grid_for(full, cfg, reference_for(cfg, prompts), k=recipe.generate.k, set_name="full")
    best = choose(grid)
    return grid, {**probe, "threshold": best["threshold"], "from": "full", "balance_score": best["balance_score"]}
