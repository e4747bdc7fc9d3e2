"""Flow-level pieces that need no run: the nightly deployment and the iteration summary artifact."""

from __future__ import annotations

from flows.schedule import nightly_deployment
from tasks.audit.report import iteration_markdown, status_row


def test_nightly_deployment_has_cron_and_one_run_at_a_time(tmp_path):
    dep = nightly_deployment(str(tmp_path), cron="0 2 * * *", iterations=3, name="nightly")
    assert dep.name == "nightly"
    assert dep.schedules[0].schedule.cron == "0 2 * * *"
    assert dep.concurrency_limit == 1
    assert dep.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert dep.parameters == {"workspace": str(tmp_path), "iterations": 3}


RECORD = {
    "iteration": "0003", "status": "completed", "parent": "0002", "finished": "2026-11-24T02:00:00+00:00",
    "choice": {"temperature": 0.9, "threshold": 0.95}, "metrics": {"coverage": 0.7, "n_selected": 512},
    "gate": {"passed": True, "failures": []}, "eval": {"pass@1": 0.61, "pass@8": 0.8},
    "promotion": {"promoted": False, "reason": "pass@1 fell by 0.050 (> tolerance 0.02)"}, "next_parent": "0002",
}


def test_status_row_flattens_a_record():
    row = status_row(RECORD)
    assert row["test_pass@1"] == 0.61 and row["test_pass@k"] == 0.8
    assert row["temperature"] == 0.9 and row["promoted"] is False and row["next_parent"] == "0002"


def test_markdown_artifact_shows_metrics_and_the_decision():
    md = iteration_markdown(RECORD)
    assert md.startswith("# flywheel iteration 0003: completed")
    assert "| test_pass@1 | 0.610 |" in md
    assert "**Decision:** held: pass@1 fell by 0.050" in md


def test_markdown_links_the_dashboard(tmp_path):
    md = iteration_markdown(RECORD, tmp_path / "dashboard.html")
    assert f"file://{tmp_path}/dashboard.html" in md


def test_markdown_links_the_data_docs_when_written(tmp_path):
    docs = tmp_path / "summary.html"
    assert "Data gate report" not in iteration_markdown(RECORD, None, docs)
    docs.write_text("<html></html>")
    assert f"file://{docs}" in iteration_markdown(RECORD, None, docs)
