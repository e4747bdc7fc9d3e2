"""Thin Prefect task wrappers around the stage registry and the workspace bookkeeping."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.dispatch import stage_dispatch
from tasks.layout import Layout
from tasks.pipeline import ITERATION_STAGES, dvc_stage_name, run_stage, stage_recipe
from tasks.recovery import mark_progress
from tasks.versioning import commit_stage, stage_is_current

# Every stage rewrites its outputs atomically from its inputs, so a retry is safe; training is
# not retried automatically because a failure there is rarely transient.
RETRIES = {"train": 0}


@task(cache_policy=NO_CACHE, persist_result=False)
def stage_task(root: str, stage: str, it: str | None = None, resume: bool = False) -> dict | None:
    """Run one stage and record it in dvc.lock; when resuming, skip it if DVC says it is current."""
    layout = Layout(Path(root))
    name = dvc_stage_name(stage, it)
    if resume and stage_is_current(layout.root, name):
        return {"skipped": "up to date"}
    mark_progress(layout, name)
    target = stage_dispatch(layout, stage, it)
    if target is not None:  # on a work pool; returns only once the outputs here match the worker's hashes
        from flows.dispatch import dispatch_stage

        result = dispatch_stage(layout, stage, it, target)
    else:
        result = _run_here(layout, stage, it)
    commit_stage(layout.root, name)
    return result


def _run_here(layout: Layout, stage: str, it: str | None) -> dict | None:
    """In a process of its own (the default), or in this one when the recipe says so or the stage
    fans out to Dask workers from here."""
    from tasks.shards import is_sharded
    from tasks.stage_process import run_stage_isolated

    recipe = stage_recipe(layout, it if stage in ITERATION_STAGES else None)
    if is_sharded(recipe, stage):
        from flows.sharded import run_shards

        return run_stage(layout, stage, it, shard_runner=run_shards)
    if recipe.numerics.isolate_stages:
        return run_stage_isolated(layout, stage, it)
    return run_stage(layout, stage, it)


def stage(stage_name: str, it: str | None = None):
    """The task for one stage, named `stage@iteration` in the Prefect UI."""
    return stage_task.with_options(name=dvc_stage_name(stage_name, it), retries=RETRIES.get(stage_name, 1),
                                   retry_delay_seconds=5)
