"""The `flywheel` command line: create workspaces, run and schedule the loop, inspect results."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Nightly self-improvement for reasoning models: sample, verify, select, fine-tune, evaluate, "
         "promote — every dataset and checkpoint versioned with DVC.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

WorkspaceOpt = Annotated[Path | None, typer.Option(
    "--workspace", "-w", help="Workspace folder (default: data/workspaces/default in the code repo).")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Recipe YAML used when the workspace is created (default: configs/tiny-arith.yaml).")]


def _quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import logging

    logging.getLogger("dvc").setLevel(logging.WARNING)


def _fail(err: Exception) -> None:
    from tasks.errors import FlywheelError

    code = err.exit_code if isinstance(err, FlywheelError) else 1
    typer.secho(f"error: {err}", fg="red", err=True)
    raise typer.Exit(code)


def _resolve_workspace(workspace: Path | None, config: Path | None, create: bool):
    """Open the workspace, creating it from the recipe when asked and it does not exist yet."""
    from tasks.preflight import preflight
    from tasks.recipe import load_recipe
    from tasks.workspace import DEFAULT_CONFIG, DEFAULT_WORKSPACE, init_workspace, is_workspace, open_workspace

    root = workspace or DEFAULT_WORKSPACE
    if is_workspace(root):
        layout = open_workspace(root)
        preflight(load_recipe(layout.recipe), layout.root)
        return layout
    if not create:
        return open_workspace(root)  # raises the clear "not a workspace" error
    recipe = load_recipe(config or DEFAULT_CONFIG)
    preflight(recipe, root)
    typer.echo(f"Creating workspace {root}")
    return init_workspace(root, recipe)


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="New or empty folder for the workspace.")],
         config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML (see configs/).")]) -> None:
    """Create a workspace: its own git + DVC repo, the pipeline, the resolved recipe and a local DVC remote."""
    from tasks.preflight import preflight
    from tasks.recipe import load_recipe
    from tasks.workspace import init_workspace

    try:
        recipe = load_recipe(config)
        preflight(recipe, directory)
        layout = init_workspace(directory, recipe)
    except Exception as err:  # noqa: BLE001
        _fail(err)
    typer.echo(f"Workspace ready at {layout.root}. Run: flywheel run --workspace {directory}")


@app.command()
def run(workspace: WorkspaceOpt = None, config: ConfigOpt = None,
        iterations: Annotated[int | None, typer.Option("--iterations", "-n", min=1,
                                                       help="Iterations to run (default: the recipe's run.iterations).")] = None) -> None:
    """Run the flywheel: warm-up once, then N iterations, each committed and tagged iter-NNNN.

    With no workspace, uses (and on first use creates) the default one from configs/tiny-arith.yaml.
    An iteration interrupted by a crash is resumed.
    """
    _quiet_prefect()
    try:
        layout = _resolve_workspace(workspace, config, create=True)
        from flows.nightly import flywheel_flow
        from tasks.iterations import load_records

        flywheel_flow(str(layout.root), iterations)
        _print_status(load_records(layout))
    except Exception as err:  # noqa: BLE001
        _fail(err)


@app.command()
def serve(workspace: WorkspaceOpt = None, config: ConfigOpt = None,
          cron: Annotated[str, typer.Option(help="Cron schedule (server time zone).")] = "0 2 * * *",
          iterations: Annotated[int | None, typer.Option("--iterations", "-n", min=1)] = None,
          name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly") -> None:
    """Serve the flywheel as a scheduled Prefect deployment (a long-running process).

    Needs a Prefect API: `prefect server start` and PREFECT_API_URL, or Prefect Cloud.
    """
    _quiet_prefect()
    try:
        layout = _resolve_workspace(workspace, config, create=True)
        from flows.schedule import serve_nightly

        serve_nightly(str(layout.root), cron=cron, iterations=iterations, name=name)
    except Exception as err:  # noqa: BLE001
        _fail(err)


def _print_status(records: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from tasks.report import _fmt, status_row

    rows = [status_row(r) for r in records]
    table = Table(title="flywheel iterations")
    for col in ("iteration", "status", "parent", "temperature", "train_coverage", "selected", "gate",
                "test_pass@1", "test_pass@k", "promoted"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(_fmt(r[c]) for c in ("iteration", "status", "parent", "temperature", "train_coverage",
                                             "selected", "gate", "test_pass@1", "test_pass@k", "promoted")))
    Console().print(table)


@app.command()
def status(workspace: WorkspaceOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the workspace's iterations with their metrics and promotion decisions."""
    try:
        from tasks.iterations import load_records
        from tasks.report import status_row

        layout = _resolve_workspace(workspace, None, create=False)
        records = load_records(layout)
    except Exception as err:  # noqa: BLE001
        _fail(err)
    if as_json:
        typer.echo(json.dumps([status_row(r) for r in records], indent=2))
    else:
        _print_status(records)


@app.command()
def report(workspace: WorkspaceOpt = None,
           out: Annotated[Path | None, typer.Option(help="Output folder (default: <workspace>/reports).")] = None) -> None:
    """Write the dashboard: a PNG and a self-contained HTML page of the metrics over iterations."""
    try:
        from tasks.dashboard import write_dashboard
        from tasks.iterations import load_records
        from tasks.recipe import load_recipe

        layout = _resolve_workspace(workspace, None, create=False)
        name = load_recipe(layout.recipe).run.name
        paths = write_dashboard(load_records(layout), out or layout.root / "reports", title=f"flywheel: {name}")
    except Exception as err:  # noqa: BLE001
        _fail(err)
    typer.echo(f"Wrote {paths['png']} and {paths['html']}")


@app.command(name="stage")
def stage_cmd(name: Annotated[str, typer.Argument(help="Stage name, as in dvc.yaml.")],
              iteration: Annotated[str | None, typer.Option("--iteration", "-i")] = None,
              workspace: Annotated[Path, typer.Option("--workspace", "-w")] = Path(".")) -> None:
    """Run one pipeline stage in a workspace (the command `dvc repro` calls)."""
    try:
        from tasks.layout import iteration_id
        from tasks.pipeline import run_stage
        from tasks.workspace import open_workspace

        it = iteration_id(iteration) if iteration else None  # validate before touching the workspace
        result = run_stage(open_workspace(workspace), name, it)
    except Exception as err:  # noqa: BLE001
        _fail(err)
    typer.echo(json.dumps(result, default=str))


def main() -> None:
    app()
