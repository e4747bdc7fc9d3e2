"""Bring a workspace back to a consistent state after a crash, before a run resumes it.

A SIGKILL can land anywhere: inside our atomic writers (a `.name.tmp-PID` file or folder is
left), inside `dvc commit` (a truncated dvc.lock or rwlock; an output removed from the work tree
while its copy from the cache sits in a `.token.tmp` file) or inside git (a stale `index.lock` or
ref lock). Each is repaired here, under the run lock, so the resumed run starts from the last
consistent state. Nothing committed or tagged is ever touched; a record that cannot be trusted
is restored from HEAD and its stages simply run again. (Objects that a kill left half-made in the
local cache or a local remote need nothing here: DVC re-hashes any object that is not yet
read-only before trusting it, and re-copies it.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
from pathlib import Path

import yaml

from tasks.workspace.atomic import read_json, write_json
from tasks.workspace.layout import Layout
from tasks.workspace.versioning import git

OUR_TEMP = re.compile(r"^\..+\.(tmp|old)-\d+$")  # tasks/workspace/atomic.py and write_table: .name.tmp-PID
DVC_TEMP = re.compile(r"\.[A-Za-z0-9_-]{22}\.tmp$")  # dvc_objects.fs.utils.tmp_fname: [name].token.tmp
SKIPPED = {".git", ".dvc", ".flywheel"}  # .flywheel holds resumable train checkpoints (tasks/models/resume.py)
GIT_LOCKS = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock")
LOCK_GRACE_S = 5.0  # a live git (say, a user's `git status`) holds its lock for milliseconds


def _is_temp(name: str) -> bool:
    return bool(OUR_TEMP.match(name) or DVC_TEMP.search(name))


def remove_partial_outputs(layout: Layout) -> list[Path]:
    """Delete the temp files and folders that our writers and DVC leave when killed mid-write,
    anywhere in the work tree (outputs, records, plots, the root's iterations.yaml)."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(layout.root):
        here = Path(dirpath)
        if here == layout.root:
            dirnames[:] = [d for d in dirnames if d not in SKIPPED]
        for name in [d for d in dirnames if _is_temp(d)]:
            shutil.rmtree(here / name, ignore_errors=True)
            dirnames.remove(name)
            removed.append(here / name)
        for name in filenames:
            if _is_temp(name):
                (here / name).unlink(missing_ok=True)
                removed.append(here / name)
    return sorted(removed)


def clear_stale_git_locks(layout: Layout, grace_s: float = LOCK_GRACE_S) -> list[str]:
    """Remove git lock files that a killed git left (`index.lock`, `refs/tags/iter-0001.lock`...).
    We hold the run lock, so no flywheel git writer is alive; a lock that outlives the grace
    period belongs to a dead process, and would make every later git command fail."""
    gitdir = layout.root / ".git"
    locks = [gitdir / n for n in GIT_LOCKS] + sorted((gitdir / "refs").rglob("*.lock"))
    deadline = time.monotonic() + grace_s
    while any(p.exists() for p in locks) and time.monotonic() < deadline:
        time.sleep(0.1)
    stale = [p for p in locks if p.exists()]
    for p in stale:
        p.unlink(missing_ok=True)
    return [str(p.relative_to(layout.root)) for p in stale]


def repair_dvc_state(layout: Layout) -> list[str]:
    """DVC rewrites `.dvc/tmp/rwlock` in place; a kill mid-write leaves JSON that DVC refuses
    forever after. It only lists the pids of DVC commands alive now, and we hold the run lock."""
    rwlock = layout.root / ".dvc" / "tmp" / "rwlock"
    if rwlock.is_file():
        try:
            json.loads(rwlock.read_text() or "x")
        except (ValueError, UnicodeDecodeError):
            rwlock.unlink()
            return [str(rwlock.relative_to(layout.root))]
    return []


def _in_head(layout: Layout, name: str) -> bool:
    return git(layout.root, "ls-tree", "--name-only", "HEAD", "--", name, check=False) == name


def _head_text(layout: Layout, name: str) -> str | None:
    return git(layout.root, "show", f"HEAD:{name}") if _in_head(layout, name) else None


def _lock_is_sound(layout: Layout, text: str) -> bool:
    """dvc.lock as DVC would accept it, still holding every stage the last commit recorded. DVC
    truncates the file and then writes it, so a kill can leave it empty, cut mid-line, or cut at
    a line boundary (valid YAML that has silently lost the committed iterations' stages)."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA

    try:
        data = yaml.safe_load(text)
        COMPILED_LOCKFILE_SCHEMA(data)
    except Exception:  # noqa: BLE001 - YAML and schema errors alike: DVC would refuse the file
        return False
    head = _head_text(layout, "dvc.lock")
    committed = (yaml.safe_load(head) or {}).get("stages", {}) if head else {}
    return all(data["stages"].get(name) == entry for name, entry in committed.items())


def _vars_are_sound(layout: Layout, text: str) -> bool:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and isinstance(data.get("iterations"), dict)


def restore_broken_records(layout: Layout) -> list[str]:
    """Restore dvc.lock / iterations.yaml from HEAD (or remove them when never committed) if a kill
    left them unusable; the stages they lost are not current any more and simply run again."""
    restored = []
    for name, sound in (("dvc.lock", _lock_is_sound), ("iterations.yaml", _vars_are_sound)):
        path = layout.root / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except UnicodeDecodeError:
            text = ""
        if sound(layout, text):
            continue
        if _in_head(layout, name):
            git(layout.root, "checkout", "HEAD", "--", name)
        else:
            path.unlink()
        restored.append(name)
    return restored


def recover(layout: Layout) -> dict:
    """Repair what an interrupted run left. Git locks go first: restoring a record needs git."""
    git_locks = clear_stale_git_locks(layout)
    dvc_state = repair_dvc_state(layout)
    removed = remove_partial_outputs(layout)
    return {"removed": [str(p.relative_to(layout.root)) for p in removed], "git_locks": git_locks,
            "dvc_state": dvc_state, "restored": restore_broken_records(layout)}


def mark_progress(layout: Layout, step: str) -> None:
    """Record what the run is doing now (shown by `flywheel status`; used by crash tests)."""
    write_json(layout.state_dir / "progress.json",
               {"step": step, "pid": os.getpid(), "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})


def read_progress(layout: Layout) -> dict | None:
    path = layout.state_dir / "progress.json"
    return read_json(path) if path.is_file() else None
