"""The `flywheel` command line: create workspaces, run and schedule the loop, inspect results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flywheel.common import WorkspaceOpt, audit_workspace, echo_json, fail, prefect_did_not_start, quiet_prefect
from flywheel.common import dask_shards, run_workspace, target_workspace

app = typer.Typer(
    help="Nightly self-improvement for reasoning models: sample, verify, select, fine-tune, evaluate, "
         "promote — every dataset and checkpoint versioned with DVC.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Recipe YAML used when the workspace is created (default: configs/tiny-arith.yaml).")]


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
        fail(err)
    typer.echo(f"Workspace ready at {layout.root}. Run: flywheel run --workspace {directory}")


@app.command()
def run(workspace: WorkspaceOpt = None, config: ConfigOpt = None,
        iterations: Annotated[int | None, typer.Option("--iterations", "-n", min=1,
                                                       help="Iterations to run (default: the recipe's run.iterations).")] = None) -> None:
    """Run the flywheel: warm-up once, then N iterations, each committed and tagged iter-NNNN.

    With no workspace named or found around the current folder, uses (and on first use creates) the
    default one from configs/tiny-arith.yaml. An iteration interrupted by a crash is resumed.
    The lock, the recipe, its inputs and the engine are checked before Prefect starts; the run's
    full log goes to .flywheel/logs/ in the workspace.
    """
    quiet_prefect()
    log = None
    try:
        from tasks.workspace import require_data, workspace_lock

        layout, created = run_workspace(workspace, config, create_default=True)  # a new one is checked first
        require_data(layout.root, complete=True)  # a clone before `dvc pull`: refused, nothing written
        with workspace_lock(layout):  # held for the whole run; the flow re-enters it
            if not created:
                from tasks.preflight import preflight
                from tasks.recipe import load_recipe

                preflight(load_recipe(layout.recipe), layout.root)  # the recipe, inputs, remote, engine
            from flows.nightly import flywheel_flow  # Prefect starts only now
            from flywheel.runlog import run_log
            from tasks.iterations import load_records

            with run_log(layout, "run") as log:
                flywheel_flow(str(layout.root), iterations)
        _print_status(load_records(layout))
    except Exception as err:  # noqa: BLE001
        fail(prefect_did_not_start(err) or err, log)


@app.command()
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
        from tasks.preflight import preflight
        from tasks.recipe import load_recipe

        layout, created = run_workspace(workspace, config, create_default=False)
        if not created:
            preflight(load_recipe(layout.recipe), layout.root)
        from flows.schedule import serve_nightly

        serve_nightly(str(layout.root), cron=cron, iterations=iterations, name=name)
    except Exception as err:  # noqa: BLE001
        fail(err)


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
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # logs and pipes: never squeeze the columns
    console.print(table)


@app.command()
def status(workspace: WorkspaceOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the workspace's iterations with their metrics and promotion decisions."""
    try:
        from tasks.iterations import load_records
        from tasks.report import status_row

        from tasks.layout import Layout

        records = load_records(Layout(audit_workspace(workspace, reads_data=False)))
    except Exception as err:  # noqa: BLE001
        fail(err)
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

        from tasks.layout import Layout

        layout = Layout(audit_workspace(workspace, reads_data=False))
        name = load_recipe(layout.recipe).run.name
        paths = write_dashboard(load_records(layout), out or layout.root / "reports", title=f"flywheel: {name}")
    except Exception as err:  # noqa: BLE001
        fail(err)
    typer.echo(f"Wrote {paths['png']} and {paths['html']}")


@app.command(name="stage")
def stage_cmd(name: Annotated[str, typer.Argument(help="Stage name, as in dvc.yaml.")],
              iteration: Annotated[str | None, typer.Option("--iteration", "-i")] = None,
              workspace: WorkspaceOpt = None) -> None:
    """Run one pipeline stage in a workspace (the command `dvc repro` calls).

    Under `dvc repro` the stage runs in the repository DVC runs it for, unless -w says otherwise."""
    try:
        from tasks.layout import Layout, iteration_id
        from tasks.pipeline import run_stage

        it = iteration_id(iteration) if iteration else None  # validate before touching the workspace
        result = run_stage(Layout(target_workspace(workspace, under_dvc=True).root), name, it,
                           shard_runner=dask_shards)
    except Exception as err:  # noqa: BLE001
        fail(err)
    typer.echo(json.dumps(result, default=str))


def _register_extra_commands() -> None:
    from flywheel.dispatch_cmd import deploy_worker
    from flywheel.reproduce_cmd import reproduce

    app.command()(reproduce)
    app.command(name="deploy-worker")(deploy_worker)


_register_extra_commands()


# --- audit commands: read-only; they import no torch, transformers, GX or prefect ----------------

@app.command()
def lineage(query: Annotated[str | None, typer.Argument(
                help="An iteration (2, 0002), an artifact path (models/0002) or an md5 prefix (6+ hex digits).")] = None,
            workspace: WorkspaceOpt = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
            dot: Annotated[bool, typer.Option("--dot", help="Print a Graphviz DOT graph.")] = False,
            mermaid: Annotated[bool, typer.Option("--mermaid", help="Print a Mermaid flowchart.")] = False,
            example: Annotated[str | None, typer.Option(
                "--example", help="A training example PROMPT_ID:SAMPLE_IDX: which iterations selected it.")] = None,
            example_table: Annotated[str, typer.Option(
                "--example-table", help="Look the example up in selected (default), scored or samples.")] = "selected",
            ) -> None:
    """Where an iteration, checkpoint, table or training example came from, from dvc.lock at each tag."""
    try:
        from tasks import lineage as lin
        from tasks.errors import WorkspaceError

        if sum((as_json, dot, mermaid)) > 1:
            raise WorkspaceError("choose one of --json, --dot, --mermaid.")
        root = audit_workspace(workspace, reads_data=True)
        if example:
            pid, sep, idx = example.rpartition(":")
            if not sep or not pid or not idx.lstrip("-").isdigit():
                raise WorkspaceError(f"bad --example {example!r}.", field="--example", fix="use PROMPT_ID:SAMPLE_IDX.")
            result = lin.example_lineage(root, pid, int(idx), table=example_table)
            graphs = result["lineages"]
        elif query:
            result = lin.find_artifact(root, query)
            graphs = [result]
        else:
            raise WorkspaceError("give a QUERY or --example.", fix="e.g. `flywheel lineage 2` or `flywheel lineage models/0002`.")
    except Exception as err:  # noqa: BLE001
        fail(err)
    from tasks import lineage_render as render

    if as_json:
        echo_json(result)
    elif dot:
        typer.echo(render.to_dot(graphs), nl=False)
    elif mermaid:
        typer.echo(render.to_mermaid(graphs), nl=False)
    else:
        from rich.console import Console

        Console().print(render.example_tree(result) if example else render.lineage_tree(result))


@app.command(name="log")
def log_cmd(workspace: WorkspaceOpt = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """One line per finished iteration: date, parent, temperature/threshold, gate, test pass@1/pass@K, decision."""
    try:
        from tasks.lineage import iteration_log

        rows = iteration_log(audit_workspace(workspace, reads_data=False))
    except Exception as err:  # noqa: BLE001
        fail(err)
    if as_json:
        echo_json(rows)
        return
    from tasks.lineage_render import log_lines

    for line in log_lines(rows):
        typer.echo(line)


@app.command(name="diff")
def diff_cmd(a: Annotated[str, typer.Argument(help="Iteration (1, 0001) or Parquet table path.")],
             b: Annotated[str, typer.Argument(help="Iteration or Parquet table path.")],
             workspace: WorkspaceOpt = None,
             table: Annotated[str | None, typer.Option(
                 "--table", help="samples, scored (default for iterations), selected or prompts.")] = None,
             limit: Annotated[int, typer.Option("--limit", min=0, help="Example keys to list per section.")] = 10,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What changed between two iterations (or two tables): rows by key, correct counts, metrics, params."""
    try:
        from tasks.diff import diff, diff_lines

        def is_file(x: str) -> bool:
            return Path(x).is_file()

        root = None if (is_file(a) and is_file(b) and workspace is None) else audit_workspace(workspace, reads_data=True)
        result = diff(root, a, b, table, limit)
    except Exception as err:  # noqa: BLE001
        fail(err)
    if as_json:
        echo_json(result)
    else:
        for line in diff_lines(result):
            typer.echo(line)


@app.command(name="sql")
def sql_cmd(query: Annotated[str, typer.Argument(help="A DuckDB query over the audit views (see README: Auditing).")],
            workspace: WorkspaceOpt = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
            limit: Annotated[int, typer.Option("--limit", min=1, help="Most rows to print.")] = 1000) -> None:
    """Query the workspace in SQL: iterations, metrics, artifacts, deps, prompts, samples, scored, selected."""
    try:
        import duckdb

        from tasks.audit_sql import query as run_query
        from tasks.errors import WorkspaceError

        root = audit_workspace(workspace, reads_data=True)
        try:
            cols, rows = run_query(root, query, limit)
        except duckdb.Error as err:  # the query is the user's: its mistakes are theirs to fix
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WorkspaceError(f"the query failed: {first}", field="QUERY",
                                 fix="see README: Auditing for the views and their columns.") from None
    except Exception as err:  # noqa: BLE001
        fail(err)
    if as_json:
        echo_json([dict(zip(cols, r)) for r in rows])
        return
    from rich.console import Console
    from rich.table import Table

    out = Table(show_lines=False)
    for c in cols:
        out.add_column(c, overflow="fold")
    for r in rows:
        out.add_row(*("—" if v is None else str(v) for v in r))
    Console().print(out)


def main() -> None:
    app()
