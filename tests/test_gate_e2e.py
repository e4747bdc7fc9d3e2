"""A failing data gate stops the iteration before training, records it, keeps the parent, exits non-zero."""

from __future__ import annotations

import json

import yaml

from tests.conftest import dvc, flywheel, git, write_recipe


def test_gate_failure_blocks_training_and_keeps_the_parent(tmp_path):
    recipe = write_recipe(tmp_path / "strict.yaml", {"check.min_coverage": 0.9})  # an untrained model can't
    ws = tmp_path / "ws"
    proc = flywheel("run", "-w", str(ws), "-c", str(recipe), "-n", "2", check=False)
    assert proc.returncode == 4
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "iteration 0001 blocked by the data gate: " in last
    assert "coverage" in last and "gate.json" in last and "Fix:" in last
    # the run stopped after the failed iteration; it is recorded, versioned and tagged
    assert git(ws, "tag", "--list").split() == ["iter-0000", "iter-0001"]
    record = json.loads((ws / "records/0001.json").read_text())
    assert record["status"] == "gate-failed" and record["next_parent"] == "0000"
    assert record["promotion"]["promoted"] is False
    gate = json.loads((ws / "data/iterations/0001/gate.json").read_text())
    assert gate["passed"] is False and any("coverage" in f for f in gate["failures"])
    assert "data/iterations/0001/gate.json" in git(ws, "ls-files")
    assert not (ws / "models/0001").exists()
    stages = dvc(ws, "stage", "list", "--name-only").split()
    assert "check@0001" in stages and "train@0001" not in stages
    assert "up to date" in dvc(ws, "status")
    assert (ws / "reports/data_docs/0001/summary.html").is_file()
    # the next night starts a new iteration from the kept parent
    iterations = yaml.safe_load((ws / "iterations.yaml").read_text())
    assert iterations["trained"] == {}
