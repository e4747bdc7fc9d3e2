"""Stage `calibrate`: the probe sweep picks one (temperature, threshold) pair and stores the grid."""

from __future__ import annotations

import polars as pl

from tasks.stages.calibrate import calibrate
from tasks.workspace.atomic import read_json


def test_balancing_off_stores_the_fixed_pair(micro_assets, tmp_path):
    recipe, prompts, model = micro_assets
    choice = calibrate(recipe, model, prompts, None, iteration="0001", seed=1, out_table=tmp_path / "grid.parquet",
                       out_choice=tmp_path / "choice.json")
    assert choice == {"temperature": 0.8, "threshold": 0.5, "calibrated": False}
    grid = pl.read_parquet(tmp_path / "grid.parquet")
    assert grid.height == 1 and grid["chosen"].to_list() == [True]


def test_balancing_on_sweeps_the_grid_and_records_the_choice(micro_assets, tmp_path):
    recipe, prompts, model = micro_assets
    on = recipe.model_copy(update={"calibrate": recipe.calibrate.model_copy(
        update={"enabled": True, "temperatures": [0.5, 1.0], "k": 2})})
    choice = calibrate(on, model, prompts, None, iteration="0001", seed=1, out_table=tmp_path / "grid.parquet",
                       out_choice=tmp_path / "choice.json")
    grid = pl.read_parquet(tmp_path / "grid.parquet")
    assert grid.height == 2 * len(on.calibrate.thresholds)
    assert grid["chosen"].sum() == 1
    best = grid.filter(pl.col("chosen")).row(0, named=True)
    assert best["balance_score"] == grid["balance_score"].max()
    assert choice["calibrated"] is True
    assert (choice["temperature"], choice["threshold"]) == (best["temperature"], best["threshold"])
    assert read_json(tmp_path / "choice.json") == choice
