"""Adaptive K end to end: two micro iterations through the real CLI with allocation on. The history
dependency is in iterations.yaml and the DAG, allocation.parquet is written and reproduces bit for bit,
and lineage says why a prompt got its samples."""

from __future__ import annotations

import json
import subprocess

import polars as pl
import pytest
import yaml

from tests.conftest import dvc, flywheel, write_recipe

ALLOCATION = {"enabled": True, "k_min": 1, "k_max": 6}
# both rounds sample the same 80 prompts (40 per step count, 2-3 steps), so iteration 2 has each prompt's own
# evidence; the budget is 80 prompts x generate.k 2 = 160
OVERRIDES = {"allocation": ALLOCATION, "pool.prompts_per_iteration": None, "pool.difficulty_schedule": [[2, 3]]}


@pytest.fixture(scope="module")
def allocated_workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("allocation")
    recipe = write_recipe(base / "micro.yaml", OVERRIDES)
    ws = base / "ws"
    flywheel("run", "--workspace", str(ws), "--config", str(recipe), "--iterations", "2")
    return ws


def test_history_var_and_dag(allocated_workspace):
    ws = allocated_workspace
    its = yaml.safe_load((ws / "iterations.yaml").read_text())["iterations"]
    assert its["0001"]["history"] == "data/iterations/0000/eval.json"  # nothing earlier to learn from
    assert its["0002"]["history"] == "data/iterations/0001/scored.parquet"
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert "data/iterations/0001/scored.parquet" in {d["path"] for d in lock["generate@0002"]["deps"]}
    assert {o["path"] for o in lock["generate@0002"]["outs"]} >= {"data/iterations/0002/allocation.parquet"}
    assert lock["generate@0002"]["params"]["data/iterations/0002/params.yaml"]["allocation"]["enabled"] is True
    assert '"score@0001" -> "generate@0002"' in dvc(ws, "dag", "--dot")
    assert "up to date" in dvc(ws, "status")


def test_allocation_is_written_and_spends_the_budget(allocated_workspace):
    ws = allocated_workspace
    first = pl.read_parquet(ws / "data/iterations/0001/allocation.parquet")
    second = pl.read_parquet(ws / "data/iterations/0002/allocation.parquet")
    assert first.height == second.height == 80
    assert (first["reason"] == "uniform").all() and first["k"].to_list() == [2] * 80
    assert second["k"].sum() == 160 and second["k"].min() >= 1 and second["k"].max() <= 6
    assert set(second["reason"]) <= {"history", "k_min", "k_max"}  # every prompt was sampled at 0001
    assert second["p_hat"].is_not_null().all() and second["gain_cutoff"].is_not_null().all()
    assert (second["prev_n"] == 2).all() and (second["prev_iteration"] == "0001").all()
    samples = pl.read_parquet(ws / "data/iterations/0002/samples.parquet").group_by("prompt_id").len()
    assert dict(samples.iter_rows()) == dict(second.select("prompt_id", "k").iter_rows())  # the plan was sampled
    metrics = json.loads((ws / "data/iterations/0002/metrics.json").read_text())
    assert metrics["budget"] == 160 and metrics["samples_first_pass"] == 160 and metrics["budget_unspent"] == 0
    assert metrics["k_max_used"] == second["k"].max() and "pass@2_prompts" in metrics
    rows = flywheel("sql", "SELECT iteration, sum(k) FROM allocation GROUP BY ALL ORDER BY 1", "--json",
                    "-w", str(ws)).stdout
    assert json.loads(rows) == [{"iteration": "0001", "sum(k)": 160}, {"iteration": "0002", "sum(k)": 160}]


def test_generate_with_allocation_reproduces_bit_for_bit(allocated_workspace, tmp_path):
    clone = tmp_path / "repro"
    subprocess.run(["git", "clone", "-q", str(allocated_workspace), str(clone)], check=True)
    dvc(clone, "pull", "-q")
    lock_before = (clone / "dvc.lock").read_text()
    dvc(clone, "repro", "--force", "--single-item", "generate@0002")
    assert (clone / "dvc.lock").read_text() == lock_before  # samples.parquet and allocation.parquet alike


def test_lineage_explains_a_prompts_k(allocated_workspace):
    """An untrained micro model selects little, so the example is looked up among the samples."""
    ws = allocated_workspace
    row = pl.read_parquet(ws / "data/iterations/0002/allocation.parquet").sort("k", "prompt_id").row(-1, named=True)
    pid, k = row["prompt_id"], row["k"]
    args = ("lineage", "--example", f"{pid}:0", "--example-table", "samples", "-w", str(ws))
    out = " ".join(flywheel(*args).stdout.split())
    assert f"allocation: {k} samples" in out and "correct at 0001" in out, out[:2000]
    found = json.loads(flywheel(*args, "--json").stdout)["found_in"]
    why = {f["iteration"]: f["allocation"]["why"] for f in found}
    assert why["0001"] == "2 samples: the budget of 160 shared evenly (no earlier iteration to learn from)"
    assert why["0002"].startswith(f"{k} samples") and "/2 correct at 0001" in why["0002"]
    assert "budget 160" in why["0002"]


def test_a_workspace_whose_dvc_yaml_predates_allocation_refuses_it(tmp_path):
    """Its dvc.yaml has no allocation.parquet and no history dependency (a workspace keeps the dvc.yaml it
    was created with): turning allocation on there is refused in one line before any compute."""
    from tasks.config.loading import load_recipe
    from tasks.errors import ConfigError
    from tasks.preflight import preflight

    ws = tmp_path / "ws"
    flywheel("init", str(ws), "--config", str(write_recipe(tmp_path / "off.yaml")))
    dvc_yaml = ws / "dvc.yaml"
    dvc_yaml.write_text("\n".join(line for line in dvc_yaml.read_text().splitlines()
                                  if "allocation.parquet" not in line and "item.history" not in line) + "\n")
    preflight(load_recipe(write_recipe(tmp_path / "off.yaml")), ws)  # allocation off: nothing to refuse
    with pytest.raises(ConfigError) as exc:
        preflight(load_recipe(write_recipe(tmp_path / "on.yaml", {"allocation": ALLOCATION})), ws)
    msg = str(exc.value)
    assert "\n" not in msg and "allocation.enabled" in msg and "flywheel init" in msg, msg
