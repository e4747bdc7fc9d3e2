"""`flywheel reproduce`: re-derive a past iteration from the workspace's git history and DVC remote."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from flywheel.common import WorkspaceOpt, dask_shards, dvc_warnings_off, fail, quiet_prefect, target_workspace


def reproduce(iteration: Annotated[str, typer.Argument(help="Iteration number, e.g. 2 or 0002 (0 = warm-up).")],
              workspace: WorkspaceOpt = None,
              stage: Annotated[str | None, typer.Option(help="Re-run only this stage (e.g. score).")] = None,
              verify_only: Annotated[bool, typer.Option("--verify-only", help="Fetch all recorded artifacts and "
                                                        "check their hashes, without recomputing.")] = False,
              allow_version_drift: Annotated[bool, typer.Option(help="Continue when package versions differ.")] = False,
              as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Re-run an iteration in an isolated clone and compare every output with its recorded hash.

    The live workspace is never modified; inside a clone, the clone's history and DVC remote are
    used. Exits 1 when any artifact differs or is missing.
    """
    from tasks.audit.reproduce import check_provenance, deterministic, isolated_clone, load_record, relax_for_gpu, rerun
    from tasks.audit.reproduce import summary
    from tasks.audit.reproduce import verify_only as verify
    from tasks.config.loading import load_recipe
    from tasks.preflight import preflight
    from tasks.workspace.atomic import read_json
    from tasks.workspace.layout import Layout, iteration_id

    quiet_prefect()
    try:
        it = iteration_id(iteration)
        layout = Layout(target_workspace(workspace).root)
        preflight(load_recipe(layout.recipe), layout.root)
        record = load_record(layout.root, it)
        recipe = load_recipe(layout.recipe)
        notes = check_provenance(record, allow_version_drift, in_process=not recipe.numerics.isolate_stages)
        for note in notes:  # whether the bits can match, before any compute (verify-only computes nothing)
            if note.startswith("bits ") and not verify_only:
                typer.echo(f"note: {note}", err=True)
        with tempfile.TemporaryDirectory(prefix=f"flywheel-reproduce-{it}-") as tmp, dvc_warnings_off(), \
                isolated_clone(layout.root, it, Path(tmp) / "ws") as clone:
            checks = verify(clone, it) if verify_only else rerun(clone, it, only=stage, shard_runner=dask_shards)
            if not verify_only and not deterministic(record):
                now = clone.eval(it) if clone.eval(it).is_file() else None
                checks, gpu_notes = relax_for_gpu(checks, record.get("eval"), read_json(now) if now else None)
                notes += gpu_notes
    except Exception as err:  # noqa: BLE001
        fail(err)
    result = summary(checks) | {"iteration": it, "notes": notes, "mode": "verify" if verify_only else "rerun"}
    if as_json:
        typer.echo(json.dumps(result | {"artifacts": [c.__dict__ for c in checks]}, indent=2))
    else:
        _print(checks, notes)
    if not result["ok"]:
        fail(mismatch(it, result["problems"], result["checked"]))


def mismatch(it: str, problems: list[dict], checked: int):
    from tasks.errors import ReproduceMismatchError

    shown = ", ".join(f"{p['path']} {p['status']}" for p in problems[:3]) + (", ..." if len(problems) > 3 else "")
    return ReproduceMismatchError(f"iteration {it} did not reproduce: {len(problems)} of {checked} artifacts "
                                  f"differ or are missing ({shown}).",
                                  fix="the table (or --json) lists each artifact with its recorded and reproduced hash.")


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
