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


def test_probe_samples_are_kept_and_rebuild_the_grid(micro_assets, tmp_path):
    """The probe table is an output of its own: from it alone, the grid and the choice come out again, bit for bit."""
    from tasks.data.schema import CALIBRATION, write_table
    from tasks.metrics.calibration_grid import choose, ranked
    from tasks.stages.calibrate import grid_for

    recipe, prompts, model = micro_assets
    on = recipe.model_copy(update={"calibrate": recipe.calibrate.model_copy(
        update={"enabled": True, "temperatures": [0.5, 1.0], "k": 2, "fidelity": "ours"})})
    choice = calibrate(on, model, prompts, None, iteration="0001", seed=1, out_table=tmp_path / "grid.parquet",
                       out_choice=tmp_path / "choice.json", out_probe=tmp_path / "probe.parquet")
    probe = pl.read_parquet(tmp_path / "probe.parquet")
    n_probe = pl.read_parquet(prompts).filter(pl.col("split") == "probe").height
    assert probe.height == 2 * 2 * n_probe
    assert sorted(probe["temperature"].unique().to_list()) == [0.5, 1.0]
    rebuilt = grid_for(probe, on.calibrate, None, k=2, set_name="probe")
    write_table(rebuilt, tmp_path / "rebuilt.parquet", CALIBRATION)
    assert (tmp_path / "rebuilt.parquet").read_bytes() == (tmp_path / "grid.parquet").read_bytes()
    assert {k: choice[k] for k in ("temperature", "threshold")} == {k: choose(rebuilt)[k] for k in
                                                                   ("temperature", "threshold")}
    # the winner and the five cells ranked behind it, in the choice's own order
    assert choice["fidelity"] == "ours"
    assert choice["runners_up"] == ranked(rebuilt, 6, tie_lowest=False)[1:]
    assert len(choice["runners_up"]) == 5
    top = [choice["balance_score"]] + [c["balance_score"] for c in choice["runners_up"]]
    assert top == sorted(top, reverse=True)


def test_a_legacy_recipe_keeps_its_choice_json(micro_assets, tmp_path):
    """A recipe recorded before calibrate.fidelity writes the choice.json it always wrote (no new keys)."""
    recipe, prompts, model = micro_assets
    on = recipe.model_copy(update={"calibrate": recipe.calibrate.model_copy(
        update={"enabled": True, "temperatures": [0.5], "k": 2})})
    assert on.calibrate.fidelity is None
    choice = calibrate(on, model, prompts, None, iteration="0001", seed=1, out_table=tmp_path / "grid.parquet",
                       out_choice=tmp_path / "choice.json")
    assert set(choice) == {"temperature", "threshold", "balance_score", "calibrated"}
    grid = pl.read_parquet(tmp_path / "grid.parquet")
    best = grid.filter(pl.col("balance_score") == grid["balance_score"].max())
    assert choice["threshold"] == best["threshold"].max()  # the legacy tie-break: the highest tied threshold
