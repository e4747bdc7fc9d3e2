"""Dispatch a stage to a Prefect work pool: the worker flow, its deployment, and the orchestrator call.

The nightly run calls `dispatch_stage` in place of running the stage locally; it starts the
`flywheel-stage` deployment as a subflow with `run_deployment` and waits for it. Data moves only
through the DVC remote (see `tasks.placement.dispatch` for the protocol and its checks).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger

from tasks.config.recipe import StageDispatch
from tasks.workspace.atomic import write_json
from tasks.placement.dispatch import (DispatchError, DispatchRequest, RunCacheMiss, WorkerReport, build_request,
                            check_report, collect_outputs, push_inputs)
from tasks.pipeline import dvc_stage_name
from tasks.workspace.layout import Layout

WORKER_FLOW = "flywheel-stage"
REPORT_KEY = "flywheel-stage-report"


@flow(name=WORKER_FLOW, log_prints=True)
def stage_worker_flow(request: DispatchRequest) -> dict:
    """Run one flywheel stage on this worker, in a throw-away workspace skeleton (see tasks.placement.dispatch_worker)."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.placement.dispatch_worker import run_request

    with tempfile.TemporaryDirectory(prefix="flywheel-stage-") as tmp:
        report = run_request(request, Path(tmp))
    # The report travels through the Prefect API: results stored on the worker's disk are not
    # readable by the orchestrator on another machine.
    create_markdown_artifact(key=REPORT_KEY, markdown=report_markdown(report),
                             description=f"flywheel {report.stage}: outputs pushed to the DVC remote")
    return report.model_dump()


def report_markdown(report: WorkerReport) -> str:
    outs = "\n".join(f"| `{p}` | `{h}` |" for p, h in sorted(report.outs().items()))
    return (f"# {report.stage} on {report.device}\n\n| output | md5 |\n|---|---|\n{outs}\n\n"
            f"```json\n{report.model_dump_json(indent=2)}\n```\n")


def parse_report(markdown: str) -> WorkerReport:
    body = markdown.split("```json\n", 1)[1].rsplit("\n```", 1)[0]
    return WorkerReport.model_validate_json(body)


def read_report(flow_run_id) -> WorkerReport:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[REPORT_KEY])))
    if not found:
        raise DispatchError(f"the worker flow run {flow_run_id} completed without a report.",
                            fix=f"check that its deployment runs the `{WORKER_FLOW}` flow of this version.")
    return parse_report(str(found[0].data))


def _cancel(flow_run_id) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(message="flywheel: dispatch timed out"), force=True)


def dispatch_stage(layout: Layout, stage: str, it: str, cfg: StageDispatch) -> dict:
    """Run `stage@it` on the configured deployment and restore its verified outputs here.

    The caller records the stage (dvc commit) only after this returns."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    name = dvc_stage_name(stage, it)
    request = build_request(layout, stage, it)
    try:  # a worker may have finished while this run was down: its outputs wait in the run-cache
        outs = collect_outputs(layout, name, None)
        logger.info("%s: restored from the remote run-cache, no dispatch needed", name)
        return {"restored": outs}
    except RunCacheMiss:
        pass
    push_inputs(layout, request)
    logger.info("%s: dispatching to %s", name, cfg.deployment)
    run = run_deployment(cfg.deployment, parameters={"request": request.model_dump()},
                         job_variables=dict(cfg.job_variables) or None, timeout=cfg.timeout_s,
                         work_queue_name=cfg.work_queue, flow_run_name=name, tags=["flywheel", name],
                         poll_interval=cfg.poll_interval_s)
    state = run.state
    if state is None or not state.is_final():
        _cancel(run.id)
        raise DispatchError(f"{name}: the worker run {run.name} did not finish within {cfg.timeout_s:g} s; "
                            "it was cancelled.", field=f"dispatch.{stage}.timeout_s",
                            fix="raise the timeout, or check that a worker is polling the deployment's work pool.")
    if not state.is_completed():
        why = (state.message or "no message").rstrip(".")
        raise DispatchError(f"{name}: the worker run {run.name} ended {state.name}: {why}.",
                            fix="see that flow run's logs in Prefect; nothing was recorded.")
    report = read_report(run.id)
    check_report(request, report)
    outs = collect_outputs(layout, name, report.outs())
    write_json(layout.records / "dispatch" / f"{name}.json",
               {**json.loads(report.model_dump_json()), "flow_run": str(run.id), "deployment": cfg.deployment})
    logger.info("%s: outputs from %s verified (%s)", name, report.device, outs)
    return {"dispatched": str(run.id), "outputs": outs, "device": report.device}


def deploy_stage_worker(name: str, pool: str, *, image: str | None = None, job_variables: dict | None = None,
                        work_queue: str | None = None) -> str:
    """Register the worker flow as deployment `flywheel-stage/<name>` on a work pool.

    The flow is imported by module path on the worker, so the worker's environment (a venv or
    an image) must have this package installed; no code is uploaded."""
    from prefect.deployments.runner import EntrypointType

    stage_worker_flow.deploy(name=name, work_pool_name=pool, image=image, build=False, push=False,
                             job_variables=job_variables, work_queue_name=work_queue,
                             entrypoint_type=EntrypointType.MODULE_PATH, print_next_steps=False, ignore_warnings=True,
                             description="Runs one flywheel stage (train or generate) from the DVC remote",
                             tags=["flywheel"])
    return f"{WORKER_FLOW}/{name}"
