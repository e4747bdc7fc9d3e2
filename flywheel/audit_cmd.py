"""The commands that read a workspace: `status`, `report`, `lineage`, `log`, `diff`, `sql`.

Read-only: apart from `report` (matplotlib) they import no torch, transformers, GX or prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flywheel.common import WorkspaceOpt, audit_workspace, echo_json, fail, print_status

def status(workspace: WorkspaceOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the workspace's iterations with their metrics and promotion decisions."""
    try:
        from tasks.audit.report import status_row
        from tasks.workspace.iterations import load_records

        from tasks.workspace.layout import Layout

        records = load_records(Layout(audit_workspace(workspace, reads_data=False)))
    except Exception as err:  # noqa: BLE001
        fail(err)
    if as_json:
        typer.echo(json.dumps([status_row(r) for r in records], indent=2))
    else:
        print_status(records)


def report(workspace: WorkspaceOpt = None,
           out: Annotated[Path | None, typer.Option(help="Output folder (default: <workspace>/reports).")] = None) -> None:
    """Write the dashboard: a PNG and a self-contained HTML page of the metrics over iterations."""
    try:
        from tasks.audit.dashboard import write_dashboard
        from tasks.config.loading import load_recipe
        from tasks.workspace.iterations import load_records

        from tasks.workspace.layout import Layout

        layout = Layout(audit_workspace(workspace, reads_data=False))
        name = load_recipe(layout.recipe).run.name
        paths = write_dashboard(load_records(layout), out or layout.root / "reports", title=f"flywheel: {name}")
    except Exception as err:  # noqa: BLE001
        fail(err)
    typer.echo(f"Wrote {paths['png']} and {paths['html']}")


def lineage(query: Annotated[str | None, typer.Argument(
                help="An iteration (2, 0002), an artifact path (models/0002) or an md5 prefix (6+ hex digits).")] = None,
            workspace: WorkspaceOpt = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
            dot: Annotated[bool, typer.Option("--dot", help="Print a Graphviz DOT graph.")] = False,
            mermaid: Annotated[bool, typer.Option("--mermaid", help="Print a Mermaid flowchart.")] = False,
            example: Annotated[str | None, typer.Option(
                "--example", help="A training example PROMPT_ID:SAMPLE_IDX: which iterations selected it (in a "
                            "pairs iteration, as either side of a pair); PROMPT_ID:CHOSEN_IDX:REJECTED_IDX: one pair.")
            ] = None,
            example_table: Annotated[str, typer.Option(
                "--example-table", help="Look the example up in selected (default), scored or samples.")] = "selected",
            ) -> None:
    """Where an iteration, checkpoint, table or training example came from, from dvc.lock at each tag."""
    try:
        from tasks.audit import lineage as lin
        from tasks.errors import WorkspaceError

        if sum((as_json, dot, mermaid)) > 1:
            raise WorkspaceError("choose one of --json, --dot, --mermaid.")
        root = audit_workspace(workspace, reads_data=True)
        if example:
            pid, *idx = example.split(":")
            if not pid or len(idx) not in (1, 2) or not all(i.lstrip("-").isdigit() for i in idx):
                raise WorkspaceError(f"bad --example {example!r}.", field="--example",
                                     fix="use PROMPT_ID:SAMPLE_IDX, or PROMPT_ID:CHOSEN_IDX:REJECTED_IDX for a pair.")
            result = lin.example_lineage(root, pid, int(idx[0]), table=example_table,
                                         rejected_idx=int(idx[1]) if len(idx) == 2 else None)
            graphs = result["lineages"]
        elif query:
            result = lin.find_artifact(root, query)
            graphs = [result]
        else:
            raise WorkspaceError("give a QUERY or --example.", fix="e.g. `flywheel lineage 2` or `flywheel lineage models/0002`.")
    except Exception as err:  # noqa: BLE001
        fail(err)
    from tasks.audit import lineage_render as render

    if as_json:
        echo_json(result)
    elif dot:
        typer.echo(render.to_dot(graphs), nl=False)
    elif mermaid:
        typer.echo(render.to_mermaid(graphs), nl=False)
    else:
        from rich.console import Console

        Console().print(render.example_tree(result) if example else render.lineage_tree(result))


def log_cmd(workspace: WorkspaceOpt = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """One line per finished iteration: date, parent, temperature/threshold, gate, test pass@1/pass@K, decision."""
    try:
        from tasks.audit.lineage import iteration_log

        rows = iteration_log(audit_workspace(workspace, reads_data=False))
    except Exception as err:  # noqa: BLE001
        fail(err)
    if as_json:
        echo_json(rows)
        return
    from tasks.audit.lineage_render import log_lines

    for line in log_lines(rows):
        typer.echo(line)


def diff_cmd(a: Annotated[str, typer.Argument(help="Iteration (1, 0001) or Parquet table path.")],
             b: Annotated[str, typer.Argument(help="Iteration or Parquet table path.")],
             workspace: WorkspaceOpt = None,
             table: Annotated[str | None, typer.Option(
                 "--table", help="samples, scored (default for iterations), selected, allocation or prompts.")] = None,
             limit: Annotated[int, typer.Option("--limit", min=0, help="Example keys to list per section.")] = 10,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What changed between two iterations (or two tables): rows by key, correct counts, metrics, params."""
    try:
        from tasks.audit.diff import diff, diff_lines

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


def sql_cmd(query: Annotated[str, typer.Argument(help="A DuckDB query over the audit views (see README: Auditing).")],
            workspace: WorkspaceOpt = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
            limit: Annotated[int, typer.Option("--limit", min=1, help="Most rows to print.")] = 1000) -> None:
    """Query the workspace in SQL: iterations, metrics, artifacts, deps, prompts, samples, scored, selected."""
    try:
        import duckdb

        from tasks.audit.sql import query as run_query
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
