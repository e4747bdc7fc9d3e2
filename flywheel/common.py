"""Helpers every command module shares: errors on the console, Prefect's settings, and which
workspace a command acts on. Imports stay light, so refusals and `--help` stay fast."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

WorkspaceOpt = Annotated[Path | None, typer.Option(
    "--workspace", "-w", help="Workspace folder. Default: $FLYWHEEL_WORKSPACE, else the workspace the current "
    "folder is in, else data/workspaces/default in the code repo.")]


def quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the ephemeral API server can take longer than Prefect's 20 s default on a busy 2-core box
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("dvc").setLevel(logging.WARNING)


class _NoWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno != logging.WARNING


@contextmanager
def dvc_warnings_off() -> Iterator[None]:
    """Keep DVC's own warnings off the console, for commands that report the same facts themselves
    (reproduce lists every artifact the remote could not provide). DVC's errors still show."""
    import dvc  # noqa: F401 - importing dvc installs its console handlers

    quiet = _NoWarnings()
    handlers = list(logging.getLogger("dvc").handlers)
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


def fail(err: BaseException, log: Path | None = None) -> NoReturn:
    """Report an error and exit. An expected failure (the FlywheelError family) is one `error:`
    line and its exit code; anything else is a bug: its traceback, then the line, exit 1."""
    from tasks.errors import FlywheelError
    from tasks.workspace.secrets import redact  # a URL's password must not reach the console either

    if isinstance(err, FlywheelError):
        typer.secho(f"error: {redact(str(err))}", fg="red", err=True)
        raise typer.Exit(err.exit_code)
    typer.echo(redact("".join(traceback.format_exception(err)).rstrip()), err=True)
    where = f" The run's full log: {log}" if log else ""
    typer.secho(f"error: unexpected {type(err).__name__}: {redact(str(err))} (a bug: please report it with the traceback "
                f"above).{where}", fg="red", err=True)
    raise typer.Exit(1)


def prefect_did_not_start(err: BaseException):
    """Prefect's ephemeral API not starting (a loaded machine, a broken PREFECT_HOME) is not a bug
    of ours: a one-line error naming the setting, or None for any other exception."""
    from tasks.errors import FlywheelError

    if not (isinstance(err, RuntimeError) and "ephemeral Prefect API server" in str(err)):
        return None
    limit = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "?")
    return FlywheelError(f"Prefect's temporary API server did not start ({str(err).strip()}).",
                         field="PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                         fix=f"raise it (now {limit} s) on a busy machine, or start a server with "
                             "`prefect server start` and set PREFECT_API_URL.")


def echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def note(text: str) -> None:
    """One line on stderr, so that --json output on stdout stays clean."""
    typer.secho(f"note: {text}", fg="yellow", err=True)


# --- which workspace ------------------------------------------------------------------------------

def announce(target) -> None:
    """Say which workspace is used, on stderr, whenever the user did not name it with -w."""
    from tasks.workspace.repo import ENV_VAR, find_enclosing_workspace

    if target.explicit:
        return
    where = Path(os.path.abspath(target.root))
    if target.source == "env":
        here = find_enclosing_workspace(Path.cwd())
        why = f"from {ENV_VAR}" + (f", not {here} where you are" if here and here.resolve() != where.resolve()
                                   else "")
    elif target.source == "cwd":
        why = "the workspace you are in"
    else:
        why = f"the default; use -w DIR, set {ENV_VAR} or cd into a workspace for another"
    typer.echo(f"workspace: {where} ({why})", err=True)


def target_workspace(option: Path | None, *, under_dvc: bool = False):
    """The workspace a command acts on (see tasks.workspace.repo.resolve_target), checked to be complete;
    announced when it was not named with -w. Creates nothing."""
    from tasks.errors import WorkspaceError
    from tasks.workspace.repo import ENV_VAR, Target, check_workspace, looks_like_workspace, resolve_target

    target = resolve_target(option, under_dvc=under_dvc)
    if target.source == "default" and not looks_like_workspace(target.root):
        raise WorkspaceError(f"no workspace to use: no -w, no {ENV_VAR}, the current folder is not inside a "
                             f"workspace, and the default workspace {target.root} does not exist yet.",
                             fix="cd into a workspace, pass -w DIR, or create the default with `flywheel run`.")
    root = check_workspace(target.root)
    announce(target)
    return Target(root, target.source)


def audit_workspace(option: Path | None, *, reads_data: bool) -> Path:
    """A workspace to read: nothing is locked, checked against a recipe, or created. With
    `reads_data`, a clone with no data yet is refused, and missing outputs are named in a note."""
    root = target_workspace(option).root
    if reads_data:
        from tasks.workspace.repo import require_data

        state = require_data(root, complete=False)
        if state.missing:
            note(f"{state.summary()}; answers cover what is here. Fix: run `dvc pull` in {root}.")
    return root


def run_workspace(option: Path | None, config: Path | None, *, create_default: bool, quiet=None):
    """The workspace `run` and `serve` act on, created from the recipe when it does not exist yet:
    one named by -w or FLYWHEEL_WORKSPACE, and the default one only when `create_default` (a
    discovered one always exists). A new workspace's recipe is validated before anything is written;
    `quiet` (a context manager factory) holds what checking and creating it print."""
    from tasks.workspace.layout import Layout
    from tasks.workspace.repo import DEFAULT_CONFIG, find_enclosing_workspace, looks_like_workspace, resolve_target

    target = resolve_target(option)
    if looks_like_workspace(target.root) or (target.source == "default" and not create_default) \
            or find_enclosing_workspace(target.root) is not None:  # never a workspace inside a workspace
        return Layout(target_workspace(option).root), False
    from tasks.config.loading import load_recipe
    from tasks.preflight import preflight
    from tasks.workspace.repo import init_workspace

    quiet = quiet or contextlib.nullcontext
    recipe = load_recipe(config or DEFAULT_CONFIG)
    with quiet():  # the engine check imports vLLM, which logs as it loads
        preflight(recipe, target.root)
    announce(target)
    typer.echo(f"Creating workspace {target.root}")
    with quiet():
        return init_workspace(target.root, recipe), True


def dask_shards(stage: str, jobs: list, scale) -> list[str]:
    """The shard runner commands hand a sharded stage (tasks/placement/shards.py): Prefect's DaskTaskRunner,
    imported only when a stage is sharded."""
    from flows.sharded import run_shards

    return run_shards(stage, jobs, scale)


def print_status(records: list[dict], console=None) -> None:
    """The iteration table `run` ends with and `status` prints (on `console`, default: the terminal)."""
    from rich.console import Console
    from rich.table import Table

    from tasks.audit.report import _fmt, status_row

    columns = {"iteration": "iteration", "status": "status", "parent": "parent", "temperature": "temperature",
               "train_coverage": "train_coverage", "selected": "selected", "gate": "gate",
               "test_pass@1": "test_pass@1", "test_pass@k": "test_pass@k", "promoted": "promoted",
               "wall_s": "wall_s", "gen_tokens_per_s": "gen_tok/s", "peak_rss_mb": "peak_MB"}
    whole = ("wall_s", "gen_tokens_per_s", "peak_rss_mb")  # seconds, tokens/s, MB: no decimals
    # In a narrow terminal these go first (least needed first), so no column is cut to an ellipsis.
    droppable = ("peak_rss_mb", "gen_tokens_per_s", "parent", "train_coverage", "test_pass@k", "temperature")
    rows = [status_row(r) for r in records]
    console = console or Console()
    if not console.is_terminal:
        console = Console(width=200, file=console.file)  # logs and pipes: never squeeze the columns

    def build(keys: list[str]) -> Table:
        table = Table(title="flywheel iterations")
        for key in keys:
            table.add_column(columns[key], no_wrap=True)
        for r in rows:
            table.add_row(*(f"{r[k]:.0f}" if k in whole and r[k] is not None else _fmt(r[k]) for k in keys))
        return table

    def needed(table: Table) -> int:  # its natural width (a console's own measure is capped at its width)
        return Console(width=10_000).measure(table).maximum

    keys = list(columns)
    table = build(keys)
    for key in droppable:
        if needed(table) <= console.width:
            break
        keys.remove(key)
        table = build(keys)
    if len(keys) < len(columns):
        table.caption = "columns left out to fit the terminal; `flywheel status --json` has all"
    console.print(table)
