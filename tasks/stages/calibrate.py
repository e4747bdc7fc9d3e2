"""Stage `calibrate`: choose this iteration's sampling temperature and reward threshold (B-STaR).

Balancing on: sample the probe set at every temperature of the grid, score it, sweep the
threshold grid and keep the pair with the highest balance score; the whole grid is stored.
Balancing off: the recipe's fixed pair (STaR / online RFT behaviour), stored the same way.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import CalibrateConfig, Recipe
from tasks.data.schema import CALIBRATION, CALIBRATION_OPTIONS, PROBE, write_table
from tasks.workspace.atomic import write_json

RUNNERS_UP = 5  # cells recorded behind the winner in choice.json, for the audit


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

    return calibration_grid(scored, cfg.swept_thresholds(), n_star=cfg.n_star, k=k, average_over=cfg.average_over,
                            reference=reference, reference_score=cfg.reference_score,
                            record=option_record(cfg, set_name), tie_lowest=cfg.tie_lowest())


def as_chosen_by(recipe: Recipe, scored: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
    """The rows and scores the choice is made on: the B-STaR reference code's view of them under
    calibrate.fidelity reference (tasks/metrics/bstar_reference.py), else the table itself."""
    if recipe.calibrate.fidelity != "reference":
        return scored
    from tasks.metrics.bstar_reference import reference_view

    return reference_view(scored, prompts, recipe.verifier.type)


def calibrate(recipe: Recipe, model_dir: Path, prompts_path: Path, reward_dir: Path | None, *, iteration: str,
              seed: int, out_table: Path, out_choice: Path, out_probe: Path | None = None) -> dict:
    """`out_probe`: where the probe samples go (None in workspaces whose dvc.yaml predates it)."""
    cfg = recipe.calibrate
    scored = pl.DataFrame(schema=PROBE.schema)
    if not cfg.enabled:
        grid, choice = fixed_choice(recipe)
    else:
        from tasks.metrics.calibration_grid import choose, ranked

        prompts = pl.read_parquet(prompts_path)
        scored = probe_scores(recipe, model_dir, prompts, reward_dir, iteration=iteration, seed=seed)
        scored = as_chosen_by(recipe, scored, prompts)
        reference = reference_for(cfg, prompts.filter(pl.col("split") == "probe"))
        grid = grid_for(scored, cfg, reference, k=cfg.k, set_name="probe")
        choice = {**choose(grid), "calibrated": True, **cfg.reference_options()}  # options only when not default
        if cfg.fidelity is not None:  # workspaces recorded before it keep their choice.json bytes
            choice |= {"fidelity": cfg.fidelity, "runners_up": ranked(grid, RUNNERS_UP + 1, cfg.tie_lowest())[1:]}
    write_table(grid, out_table, CALIBRATION_OPTIONS if "set" in grid.columns else CALIBRATION)
    if out_probe is not None:
        write_table(scored, out_probe, PROBE)
    write_json(out_choice, choice)
    return choice


def select_threshold(scored: pl.DataFrame | None, prompts: pl.DataFrame, recipe: Recipe, choice: dict
                     ) -> tuple[pl.DataFrame, dict]:
    """The threshold select applies, and the full-set grid behind it.

    threshold_from probe: the probe's (choice.json), and an empty grid. full (the B-STaR reference code):
    keep the probe's temperature, sweep the thresholds on the iteration's whole scored set (every row,
    at the chosen temperature) and take the best (ties as in the probe's grid); the grid is recorded
    with set "full" and exactly one chosen row."""
    cfg = recipe.calibrate
    probe = {"threshold": choice["threshold"], "from": "probe", "probe_threshold": choice["threshold"],
             "balance_score": choice.get("balance_score")}
    if cfg.threshold_from == "probe" or not cfg.enabled:
        return pl.DataFrame(schema=CALIBRATION.schema), probe
    from tasks.metrics.calibration_grid import choose

    full = as_chosen_by(recipe, scored, prompts).with_columns(
        temperature=pl.lit(float(choice["temperature"]), dtype=pl.Float64))
    grid = grid_for(full, cfg, reference_for(cfg, prompts), k=recipe.generate.k, set_name="full")
    best = choose(grid)
    return grid, {**probe, "threshold": best["threshold"], "from": "full", "balance_score": best["balance_score"]}
