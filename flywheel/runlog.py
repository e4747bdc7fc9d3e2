"""The console and the log file of one `flywheel run`.

Everything the run logs, tracebacks included, goes to `.flywheel/logs/<time>-<command>-<pid>.log`
in the workspace (git-ignored), and Prefect still sends its run logs and the final state to its
API, where the UI shows them. The console keeps warnings, but not the records of Prefect's engine
about a failure (`Encountered exception ...` with its traceback, `Task run failed ...`): the CLI
reports the failure itself, in one line for an expected one and with the traceback for a bug.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.layout import Layout

ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
DETAIL_LOGGERS = (*ENGINE_LOGGERS, "tasks", "flows")  # recorded at INFO in the file


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
    """What the console shows during a run: records at the console's level or above, except the
    engine's failure records and Python warnings (both are in the log file)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or record.name == "py.warnings":
            return False
        return not (record.levelno >= logging.ERROR and record.name.startswith(ENGINE_LOGGERS))


@contextmanager
def run_log(layout: Layout, command: str) -> Iterator[Path]:
    """Send the run's logs to a file of its own and keep failure tracebacks off the console.

    Call it after Prefect is imported: Prefect configures the root logger's handlers on import."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = log_dir(layout) / f"{stamp}-{command}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(RunFormatter())
    root = logging.getLogger()
    console_level = logging.getLogger("prefect").getEffectiveLevel()
    consoles = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)]
    quiet = ConsoleFilter(console_level)
    levels = {name: logging.getLogger(name).level for name in DETAIL_LOGGERS}
    for h in consoles:
        h.addFilter(quiet)
    root.addHandler(handler)
    for name in DETAIL_LOGGERS:
        logging.getLogger(name).setLevel(min(logging.INFO, console_level))
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        root.removeHandler(handler)
        handler.close()
        for h in consoles:
            h.removeFilter(quiet)
