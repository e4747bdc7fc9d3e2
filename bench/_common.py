"""Helpers shared by the benchmark scripts (timing, tables)."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any


@contextmanager
def timed(label: str, into: dict[str, float]):
    start = time.perf_counter()
    yield
    into[label] = time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its reaped children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in header:
        table.add_column(h, no_wrap=True)
    for r in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r))
    # piped output has no terminal width; a wide table must not be cut down to ellipses
    needed = Console(width=10_000).measure(table).maximum
    Console(width=max(Console().width, needed)).print(table)


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Minimum wall time over `repeats` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out
