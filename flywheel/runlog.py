"""The console and the log file of one `flywheel run`.

Everything the run writes goes to `.flywheel/logs/<time>-<command>-<pid>.log` in the workspace
(git-ignored): Python logging records, tracebacks included, and whatever the libraries, the
stage processes, the Prefect server and the Dask workers print on stdout and stderr (file
descriptors 1 and 2 point at the file for the run; child processes inherit them). Prefect still
sends its run logs and the final state to its API, where the UI shows them.

The console shows only the stages: in a terminal one live line for the running stage (stage,
iteration, progress through the iteration, elapsed time) that stays behind as a one-line summary;
when piped, one plain line per finished stage with its wall time and key figure. The CLI then
prints the iteration table, or the failure in one line. With `-v` nothing is redirected: the
libraries' output shows as it comes, beside the plain stage lines.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tasks.pipeline import BOOTSTRAP_STAGES
from tasks.workspace.layout import Layout

ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
DETAIL_LOGGERS = (*ENGINE_LOGGERS, "tasks", "flows")  # recorded at INFO in the file
PROGRESS_LOGGER = "flows.progress"  # the flow's stage events (flows/stage_tasks.py, flows/nightly.py)

_held: list[str] = []  # output captured before the workspace (and so its log folder) existed


def log_dir(layout: Layout) -> Path:
    return layout.state_dir / "logs"


class RunFormatter(logging.Formatter):
    """Time, level, logger, the Prefect flow or task run the record belongs to, the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(run)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        record.run = f" [{run}]" if run else ""
        return super().format(record)


class ConsoleFilter(logging.Filter):
    """What the console shows during a `-v` run: records at the console's level or above, except
    the engine's failure records and Python warnings (both are in the log file)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or record.name == "py.warnings":
            return False
        return not (record.levelno >= logging.ERROR and record.name.startswith(ENGINE_LOGGERS))


def _drop_all(record: logging.LogRecord) -> bool:
    return False


def stage_name(event: dict) -> str:
    """As dvc.yaml names it: `generate@0001`, or `warmup` for a bootstrap stage."""
    return event["stage"] if event["stage"] in BOOTSTRAP_STAGES else f"{event['stage']}@{event['iteration']}"


def stage_line(event: dict, label: str) -> str:
    """`iteration 1/2   generate@0001      10.6 s  samples 32`: a finished stage."""
    figure = f"  {event['figure']}" if event.get("figure") else ""
    return f"{label:<15} {stage_name(event):<15} {event['wall_s']:>7.1f} s{figure}"


class StageConsole(logging.Handler):
    """Renders the flow's stage events: a rich live line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.label = "bootstrap"
        self.progress = None
        self.tasks: dict[str, int] = {}
        if live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
            from rich.progress import TimeElapsedColumn

            console = Console(file=stream, force_terminal=True)
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
                                     refresh_per_second=2, redirect_stdout=False, redirect_stderr=False)
            self.progress.start()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "flywheel_event", None)
        if not event:
            return
        try:
            self._show(event)
        except Exception:  # noqa: BLE001 - the console must never fail the run
            self.handleError(record)

    def _show(self, event: dict) -> None:
        kind = event["event"]
        if kind == "iteration-start":
            self.label = "bootstrap" if event["index"] == 0 else f"iteration {event['index']}/{event['count']}"
            return
        key = stage_name(event)
        if kind == "stage-start" and self.progress is not None:
            self.tasks[key] = self.progress.add_task(f"{self.label:<15} {key:<15}", total=event["total"],
                                                     completed=event["index"])
        elif kind == "stage-end":
            line = stage_line(event, self.label)
            if self.progress is None:
                self.stream.write(line + "\n")
                self.stream.flush()
                return
            if key in self.tasks:
                self.progress.remove_task(self.tasks.pop(key))
            self.progress.console.print(f"[green]✓[/green] {line}", highlight=False, markup=True)

    def stop(self) -> None:
        """End the live line. Not `close()`: Prefect's logging set-up closes every handler it finds."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@contextmanager
def _fds_to(path: Path) -> Iterator[TextIO]:
    """Point stdout and stderr (the descriptors, so child processes too) at `path`; yield a stream
    on the console's stdout."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    console = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8")
    try:
        for fd in (1, 2):
            os.dup2(target, fd)
        yield console
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(target)
        console.close()


@contextmanager
def hold_output(verbose: bool = False) -> Iterator[None]:
    """Keep what a step before the run prints (DVC's `git init` hints when a workspace is created)
    off the console; the next run log starts with it."""
    if verbose:
        yield
        return
    with tempfile.NamedTemporaryFile(prefix="flywheel-held-", suffix=".log") as tmp:
        try:
            with _fds_to(Path(tmp.name)):
                yield
        finally:
            _held.append(Path(tmp.name).read_text(encoding="utf-8", errors="replace"))


def _console_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return list({id(h): h for lg in loggers for h in lg.handlers
                 if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)}.values())


@contextmanager
def run_log(layout: Layout, command: str, verbose: bool = False) -> Iterator[Path]:
    """Send everything the run writes to a file of its own and show the stage lines on the console."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = log_dir(layout) / f"{stamp}-{command}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    if _held:
        with path.open("a", encoding="utf-8") as fh:
            fh.write("".join(_held))
        _held.clear()
    with (_fds_to(path) if not verbose else _stdout()) as console:
        import prefect.main  # noqa: F401 - configures Prefect's logging: after the redirect, before ours

        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(RunFormatter())
        root = logging.getLogger()
        console_level = logging.getLogger("prefect").getEffectiveLevel()
        consoles = _console_handlers()
        quiet = ConsoleFilter(console_level) if verbose else _drop_all
        levels = {name: logging.getLogger(name).level for name in (*DETAIL_LOGGERS, PROGRESS_LOGGER)}
        for h in consoles:
            h.addFilter(quiet)
        root.addHandler(handler)
        for name in DETAIL_LOGGERS:
            logging.getLogger(name).setLevel(min(logging.INFO, console_level))
        progress = logging.getLogger(PROGRESS_LOGGER)
        progress.setLevel(logging.INFO)
        stages = StageConsole(console, live=not verbose and console.isatty())
        progress.addHandler(stages)
        logging.captureWarnings(True)
        try:
            yield path
        finally:
            logging.captureWarnings(False)
            progress.removeHandler(stages)
            stages.stop()
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            root.removeHandler(handler)
            handler.close()
            for h in consoles:
                h.removeFilter(quiet)


@contextmanager
def _stdout() -> Iterator[TextIO]:
    yield sys.stdout
