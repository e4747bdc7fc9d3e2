"""A failing data gate stops the iteration before training, records it, keeps the parent, exits non-zero."""

from __future__ import annotations

import json

import yaml

from tests.conftest import dvc, flywheel, git, write_recipe


def _iteration_flow_run_state(ws, it: str):
    """The state Prefect recorded for the iteration's flow run (the suite's ephemeral API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    # a loaded 2-core machine can take longer than Prefect's 20 s to start the ephemeral API
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 300}), \
            get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"iteration-{it}"])))
    [run] = [r for r in runs if r.parameters.get("root") == str(ws.resolve())]
    return run.state


def test_gate_failure_blocks_training_and_keeps_the_parent(tmp_path):
    recipe = write_recipe(tmp_path / "strict.yaml", {"check.min_coverage": 0.9})  # an untrained model can't
    ws = tmp_path / "ws"
    proc = flywheel("run", "-w", str(ws), "-c", str(recipe), "-n", "2", check=False)
    assert proc.returncode == 4
    # a failed gate is a normal night: the whole of stderr is one line, with no Prefect traceback
    [last] = proc.stderr.splitlines()
    assert last.startswith("error: ") and "iteration 0001 blocked by the data gate: " in last
    assert "coverage" in last and "gate.json" in last and "Fix:" in last
    # ... while the run's log file and Prefect's flow run keep the whole story
    [log] = (ws / ".flywheel" / "logs").glob("*-run-*.log")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "tasks.errors.GateFailedError: " in text
    assert ".flywheel/" in (ws / ".gitignore").read_text().split()
    state = _iteration_flow_run_state(ws, "0001")
    assert state.is_failed() and "blocked by the data gate" in state.message
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
