"""The nightly flow: lock the workspace, bootstrap it once, then run N iterations."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow, get_run_logger

from flows.iteration import bootstrap_flow, iteration_flow
from tasks.config.loading import load_recipe
from tasks.workspace.iterations import plan_next
from tasks.workspace.recovery import recover
from tasks.workspace.repo import open_workspace, workspace_lock

progress = logging.getLogger("flows.progress")  # the console's iteration lines (flywheel/runlog.py)


@flow(name="flywheel", log_prints=True)
def flywheel_flow(workspace: str, iterations: int | None = None) -> list[dict]:
    """Run `iterations` iterations (default: the recipe's run.iterations) on one workspace.

    An iteration interrupted by a crash is resumed first and counts as one of them.
    """
    logger = get_run_logger()
    layout = open_workspace(Path(workspace))
    recipe = load_recipe(layout.recipe)
    count = iterations or recipe.run.iterations
    records = []
    # `flywheel run` already holds the lock (taken before Prefect started), so this re-enters it; a
    # run started by a deployment or `serve` takes it here, and is refused if another run holds it
    with workspace_lock(layout):
        repaired = recover(layout)
        if any(repaired.values()):
            logger.warning("recovered from an interrupted run: %s", repaired)
        progress.info("bootstrap", extra={"flywheel_event": {"event": "iteration-start", "iteration": "0000",
                                                             "index": 0, "count": count}})
        bootstrap_flow(str(layout.root))
        for index in range(1, count + 1):
            nxt = plan_next(layout, recipe.train.mode)
            logger.info("iteration %s (%s) from parent %s", nxt.it, "resuming" if nxt.resuming else "new",
                        nxt.vars.parent)
            progress.info("iteration %s (%d of %d)", nxt.it, index, count, extra={"flywheel_event": {
                "event": "iteration-start", "iteration": nxt.it, "index": index, "count": count}})
            records.append(iteration_flow(str(layout.root), nxt))
    return records
