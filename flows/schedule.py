"""Nightly scheduling: serve the flywheel flow as a cron deployment, one run per workspace at a time."""

from __future__ import annotations

from flows.nightly import flywheel_flow


def nightly_deployment(workspace: str, *, cron: str, iterations: int | None, name: str):
    """The deployment object: cron schedule, workspace parameters and a concurrency limit of one.

    The limit queues a second scheduled run behind the first; the workspace lock additionally
    refuses any run started outside this deployment (e.g. `flywheel run` by hand)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return flywheel_flow.to_deployment(
        name=name, cron=cron, parameters={"workspace": workspace, "iterations": iterations},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        description=f"flywheel nightly run on {workspace}", tags=["flywheel"])


def serve_nightly(workspace: str, *, cron: str, iterations: int | None, name: str) -> None:
    from prefect import serve

    serve(nightly_deployment(workspace, cron=cron, iterations=iterations, name=name))
