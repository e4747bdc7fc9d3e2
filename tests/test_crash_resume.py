"""Crash recovery, state by state: each test builds what a SIGKILL leaves at one moment (a temp
file, a truncated record, a stale lock) in a real workspace, and checks that `recover` repairs it
and DVC and git accept the result. The real kills are in test_crash_kills.py; these cover the
moments too short to hit from outside (an rwlock rewrite, a cut at a line boundary) and keep the
repairs fast to test."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from tasks.workspace.layout import Layout
from tasks.workspace.recovery import clear_stale_git_locks, recover
from tasks.workspace.versioning import commit_and_tag, commit_stage, stage_is_current
from tests import killing as k


@pytest.fixture
def ws(tmp_path, micro_workspace) -> Layout:
    """A copy of the micro workspace as it stood when iteration 1 was tagged."""
    root, _ = k.rewound_copy(micro_workspace, tmp_path, "iter-0001")
    return Layout(root)


def _head(ws: Layout, name: str) -> str:
    return k.git(ws.root, "show", f"HEAD:{name}")


@pytest.mark.parametrize("cut", ["empty", "at a line", "mid-line"])
def test_a_dvc_lock_cut_short_is_restored_from_head(ws, cut):
    """DVC truncates dvc.lock and then dumps it: a kill in between leaves it empty or cut. An empty
    or line-cut file is still valid YAML, yet it has lost the committed iterations' stages."""
    text = _head(ws, "dvc.lock")
    cuts = {"empty": "", "at a line": "".join(text.splitlines(keepends=True)[:40]), "mid-line": text[:len(text) // 2]}
    (ws.root / "dvc.lock").write_text(cuts[cut])
    assert recover(ws)["restored"] == ["dvc.lock"]
    assert (ws.root / "dvc.lock").read_text() == text
    assert stage_is_current(ws.root, "score@0001") and stage_is_current(ws.root, "train@0001")


def test_a_dvc_lock_that_lost_only_uncommitted_stages_is_kept(ws):
    """A cut after the committed stages only loses work in progress, which simply runs again."""
    extra = "  score@0002:\n    cmd: flywheel stage score --iteration 0002\n"
    (ws.root / "dvc.lock").write_text(_head(ws, "dvc.lock") + "\n" + extra)
    assert recover(ws)["restored"] == []
    assert "score@0002" in yaml.safe_load((ws.root / "dvc.lock").read_text())["stages"]


def test_a_dvc_lock_never_committed_is_removed_when_broken(tmp_path, micro_workspace):
    root, _ = k.rewound_copy(micro_workspace, tmp_path, "iter-0000")
    k.git(root, "reset", "-q", "--hard", "HEAD~1")  # back to `flywheel init`: dvc.lock not committed yet
    k.git(root, "tag", "-d", "iter-0000")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  prepare:\n    cm")
    assert recover(Layout(root))["restored"] == ["dvc.lock"]
    assert not (root / "dvc.lock").exists()


def test_a_broken_iterations_yaml_is_restored(ws):
    (ws.root / "iterations.yaml").write_text("")
    assert recover(ws)["restored"] == ["iterations.yaml"]
    assert "0001" in yaml.safe_load((ws.root / "iterations.yaml").read_text())["iterations"]


@pytest.mark.parametrize("content", ["", '{"read": {"da'])
def test_a_truncated_dvc_rwlock_is_cleared(ws, content):
    """DVC rewrites .dvc/tmp/rwlock in place; a cut file makes every later DVC command fail."""
    rwlock = ws.root / ".dvc" / "tmp" / "rwlock"
    rwlock.write_text(content)
    assert recover(ws)["dvc_state"] == [".dvc/tmp/rwlock"]
    commit_stage(ws.root, "score@0001")  # DVC takes its locks again
    assert stage_is_current(ws.root, "score@0001")


def test_temp_files_are_removed_everywhere_in_the_work_tree_but_nothing_else(ws):
    token = "AbCdEfGhIjKlMnOpQrSt_-"  # dvc_objects' tmp_fname: 22 url-safe characters
    temps = [".iterations.yaml.tmp-99", "records/.0002.json.tmp-99", f"data/iterations/0001/.{token}.tmp",
             f"data/iterations/0001/samples.parquet.{token}.tmp", "models/.0002.tmp-99/config.json",
             "models/.0001.old-99/model.safetensors", "data/plots/.eval.csv.tmp-7"]
    kept = [".flywheel/train-checkpoints/0002/checkpoint-1/trainer_state.json", "notes.tmp",
            "data/iterations/0001/my.tmp-file", f".dvc/cache/files/md5/.{token}.tmp"]
    for rel in temps + kept:
        (ws.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws.root / rel).write_text("x")
    removed = set(recover(ws)["removed"])
    assert removed == {t.split("/config.json")[0].split("/model.safetensors")[0] for t in temps}
    assert all((ws.root / rel).exists() for rel in kept)


def test_commits_never_record_temp_files(ws):
    for rel in (".iterations.yaml.tmp-5", "records/.0002.json.tmp-5", "data/iterations/0001/.AbCdEfGhIjKlMnOpQrSt_-.tmp"):
        (ws.root / rel).write_text("half")
    (ws.root / "records" / "note.json").write_text("{}")
    commit_and_tag(ws.root, "a commit beside temp files")
    tree = k.git(ws.root, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert "records/note.json" in tree and not [p for p in tree if k.TEMP_NAME.search(p)]
    head = k.git(ws.root, "rev-parse", "HEAD").strip()
    assert commit_and_tag(ws.root, "nothing new to commit") == head  # only temp files changed: no commit


def test_stale_git_locks_are_removed(ws):
    """A killed `git add`, `git commit` or `git tag` leaves its lock; every later git command fails."""
    locks = [ws.root / ".git" / "index.lock", ws.root / ".git" / "refs" / "tags" / "iter-0002.lock",
             ws.root / ".git" / "refs" / "heads" / "main.lock"]
    for lock in locks:
        lock.write_text("")
    assert sorted(clear_stale_git_locks(ws, grace_s=0.2)) == sorted(str(p.relative_to(ws.root)) for p in locks)
    (ws.root / "records" / "note.json").write_text("{}")
    commit_and_tag(ws.root, "after the kill", "iter-0002")
    assert "iter-0002" in k.git(ws.root, "tag", "--list").split()


def test_a_live_git_lock_is_waited_for_not_removed(ws):
    """A user's `git status` may hold index.lock for a moment: it is given time to finish."""
    lock = ws.root / ".git" / "index.lock"
    lock.write_text("")
    threading.Timer(0.3, lock.unlink).start()
    started = time.monotonic()
    assert clear_stale_git_locks(ws, grace_s=30) == []
    assert time.monotonic() - started < 20


def test_recovery_of_a_clean_workspace_changes_nothing(ws):
    before = k.git(ws.root, "status", "--porcelain"), (ws.root / "dvc.lock").read_text()
    assert not any(recover(ws).values())
    assert (k.git(ws.root, "status", "--porcelain"), (ws.root / "dvc.lock").read_text()) == before


def test_the_kill_hook_is_not_shipped():
    """The exact-moment kills come from a sitecustomize put on PYTHONPATH by the tests only."""
    root = Path(__file__).resolve().parent.parent
    shipped = [p for d in ("tasks", "flows", "flywheel") for p in (root / d).rglob("*.py")]
    assert not [p for p in shipped if "FLYWHEEL_TEST_KILL" in p.read_text()]
