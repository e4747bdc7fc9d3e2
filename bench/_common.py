"""Helpers shared by the benchmark scripts (timing, tables, arms that share an iteration 0)."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Before anything loads torch: bench processes compute on the CPU path `flywheel` uses (portable unless
# FLYWHEEL_CPU_PATH=native), so in-process training here gives the bits a stage process would.
import flywheel  # noqa: F401,E402

SHARED = ("data/prompts", "models/base", "models/0000", "data/iterations/0000")  # the bootstrap's outputs


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


def copy_iteration_zero(layout, recipe, source: Path) -> bool:
    """Copy iteration 0 from another arm's folder made with the same prompts, model, warm-up and seed.

    Returns True when the reward model was copied too, False when the caller must rebuild it (it
    learns from the verifier's labels, so other verifier or reward settings need their own)."""
    import shutil

    from tasks.config.loading import load_recipe
    from tasks.workspace.layout import Layout

    other = load_recipe(Layout(source).recipe)
    differs = [s for s in ("prompts", "model", "warmup") if getattr(other, s) != getattr(recipe, s)]
    if differs or other.run.seed != recipe.run.seed:
        raise SystemExit(f"{source}: its iteration 0 was made with other {differs or ['run.seed']} settings")
    for rel in SHARED:
        shutil.copytree(source / rel, layout.root / rel, dirs_exist_ok=True)
    if (recipe.verifier, recipe.reward) != (other.verifier, other.reward):
        return False
    shutil.copytree(source / "models/reward", layout.reward_model, dirs_exist_ok=True)
    return True
