"""Bring a workspace back to a consistent state after a crash, before a run resumes it.

Stage outputs are written atomically, so a killed stage leaves only temp files behind; the
records that matter (dvc.lock, iterations.yaml) are restored from the last commit if a kill
truncated them. Nothing committed or tagged is ever touched.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import yaml

from tasks.atomic import read_json, write_json
from tasks.layout import Layout
from tasks.versioning import git

TEMP_MARKERS = (".tmp-", ".old-")
RECORDS = ("dvc.lock", "iterations.yaml")


def _parses(path: Path) -> bool:
    try:
        yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return True


def remove_partial_outputs(layout: Layout) -> list[Path]:
    """Delete temp files and folders that atomic writers leave when killed mid-write."""
    removed = []
    for top in (layout.root / "data", layout.root / "models"):
        if not top.exists():
            continue
        for path in sorted(top.rglob(".*"), reverse=True):
            if path.name.startswith(".") and any(m in path.name for m in TEMP_MARKERS):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path)
    return removed


def restore_broken_records(layout: Layout) -> list[str]:
    """Restore dvc.lock / iterations.yaml from HEAD if a kill left them unparsable."""
    restored = []
    for name in RECORDS:
        path = layout.root / name
        if path.exists() and not _parses(path):
            tracked = git(layout.root, "ls-files", name)
            if tracked:
                git(layout.root, "checkout", "HEAD", "--", name)
            else:
                path.unlink()
            restored.append(name)
    return restored


def recover(layout: Layout) -> dict:
    return {"removed": [str(p.relative_to(layout.root)) for p in remove_partial_outputs(layout)],
            "restored": restore_broken_records(layout)}


def mark_progress(layout: Layout, step: str) -> None:
    """Record what the run is doing now (shown by `flywheel status`; used by crash tests)."""
    write_json(layout.state_dir / "progress.json",
               {"step": step, "pid": os.getpid(), "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})


def read_progress(layout: Layout) -> dict | None:
    path = layout.state_dir / "progress.json"
    return read_json(path) if path.is_file() else None
