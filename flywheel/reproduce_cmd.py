"""`flywheel reproduce`: re-derive a past iteration from the workspace's git history and DVC remote."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer


def reproduce(iteration: Annotated[str, typer.Argument(help="Iteration number, e.g. 2 or 0002 (0 = warm-up).")],
              workspace: Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace folder.")] = None,
              stage: Annotated[str | None, typer.Option(help="Re-run only this stage (e.g. score).")] = None,
              verify_only: Annotated[bool, typer.Option("--verify-only", help="Fetch all recorded artifacts and "
                                                        "check their hashes, without recomputing.")] = False,
              allow_version_drift: Annotated[bool, typer.Option(help="Continue when package versions differ.")] = False,
              as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Re-run an iteration in an isolated clone and compare every output with its recorded hash.

    The live workspace is never modified. Exits 1 when any artifact differs or is missing.
    """
    from flywheel.cli import _fail, _quiet_prefect, _resolve_workspace
    from tasks.layout import iteration_id
    from tasks.atomic import read_json
    from tasks.reproduce import check_provenance, deterministic, isolated_clone, load_record, relax_for_gpu, rerun
    from tasks.reproduce import summary
    from tasks.reproduce import verify_only as verify

    _quiet_prefect()
    try:
        it = iteration_id(iteration)
        layout = _resolve_workspace(workspace, None, create=False)
        record = load_record(layout.root, it)
        notes = check_provenance(record, allow_version_drift)
        with tempfile.TemporaryDirectory(prefix=f"flywheel-reproduce-{it}-") as tmp, \
                isolated_clone(layout.root, it, Path(tmp) / "ws") as clone:
            checks = verify(clone, it) if verify_only else rerun(clone, it, only=stage)
            if not verify_only and not deterministic(record):
                now = clone.eval(it) if clone.eval(it).is_file() else None
                checks, gpu_notes = relax_for_gpu(checks, record.get("eval"), read_json(now) if now else None)
                notes += gpu_notes
    except Exception as err:  # noqa: BLE001
        _fail(err)
    result = summary(checks) | {"iteration": it, "notes": notes, "mode": "verify" if verify_only else "rerun"}
    if as_json:
        typer.echo(json.dumps(result | {"artifacts": [c.__dict__ for c in checks]}, indent=2))
    else:
        _print(checks, notes)
    raise typer.Exit(0 if result["ok"] else 1)


def _print(checks, notes) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="reproduction")
    for col in ("stage", "artifact", "recorded", "reproduced", "result"):
        table.add_column(col)
    for c in checks:
        style = "green" if c.status == "match" else "red"
        table.add_row(c.stage, c.path, (c.recorded or "—")[:12], (c.reproduced or "—")[:12],
                      f"[{style}]{c.status}[/{style}]")
    console = Console()
    console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
