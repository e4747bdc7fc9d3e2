"""Progress bars for long work (rich); quiet when stderr is not a terminal unless forced."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(desc: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`. Shown on a terminal, or everywhere with FLYWHEEL_PROGRESS=1."""
    show = os.environ.get("FLYWHEEL_PROGRESS", "auto")
    if show == "0" or (show == "auto" and not sys.stderr.isatty()):
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as prog:
        task = prog.add_task(desc, total=total)
        yield lambda n: prog.update(task, advance=n)
