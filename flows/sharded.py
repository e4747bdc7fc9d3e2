"""Map a stage's shards over Dask workers with Prefect's DaskTaskRunner (the `dask` extra).

A nested flow run per sharded stage: one task run per shard, shown in the Prefect UI. The
stage (tasks/placement/shards.py) plans the shards and merges their files; this module only runs them.
"""

from __future__ import annotations

import contextlib
import logging

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from tasks.config.recipe import ScaleConfig
from tasks.errors import ConfigError
from tasks.placement.shards import GenerateShard, ScoreShard, ShardFailedError, run_shard


# No task retries: the stage task around this flow already retries, and a deterministic error
# would only fail twice.
@task(cache_policy=NO_CACHE, persist_result=False)
def shard_task(job: GenerateShard | ScoreShard) -> str:
    return run_shard(job)


@flow(name="flywheel-shards", persist_result=False, validate_parameters=False)
def shard_flow(stage: str, jobs: list) -> list[str]:
    futures = [shard_task.with_options(task_run_name=f"{stage}-shard-{j.index:05d}").submit(j) for j in jobs]
    wait(futures)  # every shard has stopped before the caller removes the shard folder
    failures = []
    for job, fut in zip(jobs, futures):
        if fut.state.is_failed() or fut.state.is_crashed():
            exc = fut.result(raise_on_failure=False)
            failures.append(f"shard {job.index + 1} of {job.count} (rows {job.offset}-{job.offset + job.length - 1} "
                            f"of {job.inputs}): {type(exc).__name__}: {exc}")
    if failures:
        raise ShardFailedError(f"{stage}: {len(failures)} of {len(jobs)} shard(s) failed; nothing was written. "
                               f"First: {failures[0]}")
    return [f.result() for f in futures]


def dask_runner(scale: ScaleConfig):
    """A DaskTaskRunner on an existing scheduler (`address`) or on a local cluster of worker processes."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("scale.runner 'dask' needs the prefect-dask package.", field="scale.runner",
                          fix="pip install 'flywheel[dask]', or set scale.runner: local.") from None
    if scale.address:
        return DaskTaskRunner(address=scale.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": scale.n_workers, "threads_per_worker": scale.threads_per_worker, "processes": True,
        "dashboard_address": ":0"})  # any free port: never collide with another run's dashboard


def _shared_api() -> contextlib.AbstractContextManager:
    """Workers get the caller's Prefect settings. Without a configured server they hold no API URL,
    and each worker would start a temporary server of its own: hand them the caller's instead."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        return contextlib.nullcontext()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # starts (or finds) this process's temporary server
        url = str(client.api_url).rstrip("/")
    return temporary_settings({PREFECT_API_URL: url})


def run_shards(stage: str, jobs: list[GenerateShard] | list[ScoreShard], scale: ScaleConfig) -> list[str]:
    """Run every shard; return their output paths in shard order, or raise ShardFailedError."""
    runner = dask_runner(scale)
    # distributed logs every worker start and stop at INFO; keep the stage's own log readable
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    try:
        with _shared_api():
            return shard_flow.with_options(task_runner=runner,
                                           flow_run_name=f"{stage}-{len(jobs)}-shards")(stage, jobs)
    finally:
        quiet.setLevel(level)
