"""Thin Prefect task wrappers around the stage registry and the workspace bookkeeping."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.metrics import costs
from tasks.pipeline import BASELINE, BOOTSTRAP_STAGES, ITERATION_STAGES, dvc_stage_name, run_stage, stage_recipe
from tasks.placement.dispatch import stage_dispatch
from tasks.workspace.layout import Layout
from tasks.workspace.recovery import mark_progress
from tasks.workspace.versioning import commit_stage, stage_is_current

# Every stage rewrites its outputs atomically from its inputs, so a retry is safe; training is
# not retried automatically because a failure there is rarely transient.
RETRIES = {"train": 0}

progress = logging.getLogger("flows.progress")  # structured events: `flywheel_event` on each record


@task(cache_policy=NO_CACHE, persist_result=False)
def stage_task(root: str, stage: str, it: str | None = None, resume: bool = False) -> dict | None:
    """Run one stage and record it in dvc.lock; when resuming, skip it if DVC says it is current.

    Its wall time, peak memory and tokens go to the iteration's cost report (tasks/metrics/costs.py), and
    its start and end to the `flows.progress` log (the console's stage lines)."""
    layout = Layout(Path(root))
    name = dvc_stage_name(stage, it)
    at = it or BASELINE
    position = {"stage": stage, "iteration": at, "index": _stages_of(it).index(stage), "total": len(_stages_of(it))}
    if resume and stage_is_current(layout.root, name):
        progress.info("%s skipped: up to date", name, extra={"flywheel_event": {
            "event": "stage-end", **position, "wall_s": 0.0, "figure": "up to date", "skipped": True}})
        return {"skipped": "up to date"}
    progress.info("%s started", name, extra={"flywheel_event": {"event": "stage-start", **position}})
    mark_progress(layout, name)
    started = time.monotonic()
    usage: dict = {}
    target = stage_dispatch(layout, stage, it)
    if target is not None:  # on a work pool; returns only once the outputs here match the worker's hashes
        from flows.dispatch import dispatch_stage

        result, process = dispatch_stage(layout, stage, it, target), "worker"
    else:
        result, process = _run_here(layout, stage, it, usage)
    compute_s = time.monotonic() - started
    commit_stage(layout.root, name)
    wall_s = time.monotonic() - started
    try:  # the report of a stage that did its work must never fail it
        entry = costs.stage_cost(layout, stage, at, result, compute_s, usage.get("peak_rss_mb"), process)
        costs.record_stage(layout, at, stage, entry | {"wall_s": round(wall_s, 2), "compute_s": round(compute_s, 2)})
        figure = costs.key_figure(layout, stage, at, result)
    except Exception:  # noqa: BLE001 - logged with its traceback, in the run's log file
        progress.warning("%s: no cost report", name, exc_info=True)
        figure = ""
    progress.info("%s finished in %.1f s%s", name, wall_s, f": {figure}" if figure else "", extra={"flywheel_event": {
        "event": "stage-end", **position, "wall_s": round(wall_s, 2), "figure": figure, "skipped": False}})
    return result


def _stages_of(it: str | None) -> tuple[str, ...]:
    return ITERATION_STAGES if it else BOOTSTRAP_STAGES


def _run_here(layout: Layout, stage: str, it: str | None, usage: dict) -> tuple[dict | None, str]:
    """In a process of its own (the default), or in this one when the recipe says so or the stage
    fans out to Dask workers from here. Returns the result and which process ran it."""
    from tasks.placement.shards import is_sharded
    from tasks.placement.stage_process import run_stage_isolated

    recipe = stage_recipe(layout, it if stage in ITERATION_STAGES else None)
    if is_sharded(recipe, stage):
        from flows.sharded import run_shards

        result, process = run_stage(layout, stage, it, shard_runner=run_shards), "flow"
    elif recipe.numerics.isolate_stages:
        return run_stage_isolated(layout, stage, it, usage), "stage"
    else:
        result, process = run_stage(layout, stage, it), "flow"
    usage["peak_rss_mb"] = costs.own_peak_rss_mb()  # the flow process's high-water mark so far
    return result, process


def stage(stage_name: str, it: str | None = None):
    """The task for one stage, named `stage@iteration` in the Prefect UI."""
    return stage_task.with_options(name=dvc_stage_name(stage_name, it), retries=RETRIES.get(stage_name, 1),
                                   retry_delay_seconds=5)
