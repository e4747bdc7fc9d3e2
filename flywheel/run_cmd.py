"""`flywheel init`, `run`, `serve` and `stage`: create a workspace and run the loop in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flywheel.common import WorkspaceOpt, dask_shards, fail, prefect_did_not_start, print_status, quiet_prefect
from flywheel.common import run_workspace, target_workspace

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Recipe YAML used when the workspace is created (default: configs/tiny-arith.yaml).")]


def init(directory: Annotated[Path, typer.Argument(help="New or empty folder for the workspace.")],
         config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML (see configs/).")]) -> None:
    """Create a workspace: its own git + DVC repo, the pipeline, the resolved recipe and a local DVC remote."""
    from flywheel.runlog import hold_output
    from tasks.config.loading import load_recipe
    from tasks.preflight import preflight
    from tasks.workspace.repo import init_workspace

    try:
        recipe = load_recipe(config)
        preflight(recipe, directory)
        with hold_output():  # DVC's hints to commit to git: the workspace commits by itself
            layout = init_workspace(directory, recipe)
    except Exception as err:  # noqa: BLE001
        fail(err)
    import shlex

    typer.echo(f"Workspace ready at {layout.root}. Run: flywheel run --workspace {shlex.quote(str(directory))}")


def run(workspace: WorkspaceOpt = None, config: ConfigOpt = None,
        iterations: Annotated[int | None, typer.Option("--iterations", "-n", min=1,
                                                       help="Iterations to run (default: the recipe's run.iterations).")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the libraries' logs and warnings "
                                              "as they come (they always go to the run's log file).")] = False) -> None:
    """Run the flywheel: warm-up once, then N iterations, each committed and tagged iter-NNNN.

    With no workspace named or found around the current folder, uses (and on first use creates) the
    default one from configs/tiny-arith.yaml. An iteration interrupted by a crash is resumed.
    The lock, the recipe, its inputs and the engine are checked before Prefect starts. The console
    shows one line per stage and the iteration table; everything else, the libraries' output
    included, goes to the run's log file in .flywheel/logs/ of the workspace.
    """
    quiet_prefect()
    log = None
    try:
        from flywheel.runlog import hold_output
        from tasks.workspace.repo import require_data, workspace_lock

        # a new one is checked first; what creating it prints goes to the run's log
        layout, created = run_workspace(workspace, config, create_default=True, quiet=lambda: hold_output(verbose))
        require_data(layout.root, complete=True)  # a clone before `dvc pull`: refused, nothing written
        with workspace_lock(layout):  # held for the whole run; the flow re-enters it
            if not created:
                from tasks.config.loading import load_recipe
                from tasks.preflight import preflight

                with hold_output(verbose):  # what the engine check prints goes to the run's log
                    preflight(load_recipe(layout.recipe), layout.root)  # the recipe, inputs, remote, engine
            from flywheel.runlog import run_log
            from tasks.workspace.iterations import load_records

            with run_log(layout, "run", verbose) as log:
                from flows.nightly import flywheel_flow  # Prefect starts only now

                flywheel_flow(str(layout.root), iterations)
        print_status(load_records(layout))
    except Exception as err:  # noqa: BLE001
        fail(prefect_did_not_start(err) or err, log)


def serve(workspace: WorkspaceOpt = None, config: ConfigOpt = None,
          cron: Annotated[str, typer.Option(help="Cron schedule (server time zone).")] = "0 2 * * *",
          iterations: Annotated[int | None, typer.Option("--iterations", "-n", min=1)] = None,
          name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly") -> None:
    """Serve the flywheel as a scheduled Prefect deployment (a long-running process).

    Needs a Prefect API: `prefect server start` and PREFECT_API_URL, or Prefect Cloud. Each
    scheduled run takes the workspace lock itself, so this process does not hold it.
    """
    quiet_prefect()
    try:
        from tasks.config.loading import load_recipe
        from tasks.preflight import preflight

        layout, created = run_workspace(workspace, config, create_default=False)
        if not created:
            preflight(load_recipe(layout.recipe), layout.root)
        from flows.schedule import serve_nightly

        serve_nightly(str(layout.root), cron=cron, iterations=iterations, name=name)
    except Exception as err:  # noqa: BLE001
        fail(err)


def stage_cmd(name: Annotated[str, typer.Argument(help="Stage name, as in dvc.yaml.")],
              iteration: Annotated[str | None, typer.Option("--iteration", "-i")] = None,
              workspace: WorkspaceOpt = None) -> None:
    """Run one pipeline stage in a workspace (the command `dvc repro` calls).

    Under `dvc repro` the stage runs in the repository DVC runs it for, unless -w says otherwise."""
    try:
        from tasks.pipeline import run_stage
        from tasks.workspace.layout import Layout, iteration_id

        it = iteration_id(iteration) if iteration else None  # validate before touching the workspace
        result = run_stage(Layout(target_workspace(workspace, under_dvc=True).root), name, it,
                           shard_runner=dask_shards)
    except Exception as err:  # noqa: BLE001
        fail(err)
    typer.echo(json.dumps(result, default=str))
