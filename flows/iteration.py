"""The iteration flow: calibrate, generate, score, select, check, then train, evaluate, promote."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.stage_tasks import stage
from tasks.audit.dashboard import write_dashboard
from tasks.audit.report import iteration_markdown
from tasks.errors import GateFailedError
from tasks.metrics import costs
from tasks.pipeline import BASELINE, BOOTSTRAP_STAGES, GATED_STAGES, ITERATION_STAGES
from tasks.workspace.atomic import read_json
from tasks.workspace.iterations import NextIteration, finish_iteration, load_records, start_iteration, ungate
from tasks.workspace.layout import Layout
from tasks.workspace.versioning import tags


@flow(name="flywheel-bootstrap")
def bootstrap_flow(root: str) -> dict:
    """prepare → base → warm-up → baseline evaluation; recorded as tag iter-0000."""
    layout = Layout(Path(root))
    if "iter-0000" in tags(layout.root):
        return {"skipped": "already bootstrapped"}
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for name in BOOTSTRAP_STAGES:
        stage(name)(root, name, None, resume=True)
    return finish_iteration(layout, BASELINE, started=started, status="baseline")


@flow(name="flywheel-iteration", flow_run_name="iteration-{nxt.it}")
def iteration_flow(root: str, nxt: NextIteration) -> dict:
    logger = get_run_logger()
    layout = Layout(Path(root))
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if not nxt.resuming:
        costs.clear(layout, nxt.it)  # a stale report of an iteration number used before
    start_iteration(layout, nxt)
    status = "completed"
    for name in ITERATION_STAGES:
        if name in GATED_STAGES and not read_json(layout.gate(nxt.it))["passed"]:
            ungate(layout, nxt.it)
            status = "gate-failed"
            break
        stage(name, nxt.it)(root, name, nxt.it, resume=nxt.resuming)
    record = finish_iteration(layout, nxt.it, started=started, status=status)
    dashboard = write_dashboard(load_records(layout), layout.root / "reports")
    markdown = iteration_markdown(record, dashboard["html"], layout.data_docs(nxt.it) / "summary.html")
    create_markdown_artifact(key=f"iteration-{nxt.it}", markdown=markdown, description=f"flywheel iteration {nxt.it}")
    if status == "gate-failed":
        failures = "; ".join(record["gate"]["failures"])
        logger.error("iteration %s: data gate failed (%s); training skipped, parent kept", nxt.it, failures)
        # Failing the flow run makes the failure visible in Prefect and stops the night's run.
        raise GateFailedError(f"iteration {nxt.it} blocked by the data gate: {failures}.",
                              file=str(layout.gate(nxt.it)),
                              fix=f"inspect {layout.data_docs(nxt.it) / 'summary.html'}; the parent model was kept.")
    return record
