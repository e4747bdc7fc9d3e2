"""The DVC remote breaks while a run is inside its stages: the iteration is not tagged, the run
exits non-zero with one line naming the remote and the fix, and a rerun after the fix completes
with the uninterrupted run's hashes. (An object deleted from the remote is named by
`reproduce --verify-only`: tests/test_reproduce.py.)"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tasks.errors import WorkspaceError
from tasks.workspace.versioning import push
from tests import killing as k
from tests.conftest import write_recipe


def _unwritable(remote: Path) -> None:
    """Root ignores permissions, so the folder DVC writes into becomes a file: ENOTDIR for anyone."""
    (remote / "files").rename(remote.with_name("files.saved"))
    (remote / "files").write_text("not a folder\n")


def _writable_again(remote: Path) -> None:
    (remote / "files").unlink()
    remote.with_name("files.saved").rename(remote / "files")


def _removed(remote: Path) -> None:
    shutil.rmtree(remote)


def _recreated(remote: Path) -> None:
    remote.mkdir()  # an empty folder again: the rerun pushes everything the tags record


STAGES = ("calibrate", "generate", "score", "select", "check", "train", "evaluate", "promote")
FAULTS = {"unwritable": (_unwritable, _writable_again), "removed": (_removed, _recreated)}


STAGE_LINE = re.compile(r"^iteration \d+/\d+ +\S+@\d{4} ")


def _error_line(ws: Path) -> str:
    """The failed run's output (runs.log holds each run after a `===` header): the lines of the
    stages that finished, then the error, in one line; nothing else (no traceback, no library noise)."""
    output = (ws.parent / "runs.log").read_text().rsplit("\n=== ", 1)[-1].splitlines()[1:]
    lines = [ln for ln in output if ln.strip()]
    assert lines and lines[-1].startswith("error: "), output[-40:]
    assert all(STAGE_LINE.match(ln) for ln in lines[:-1]), output[-40:]
    return lines[-1]


def _fault_mid_run(tmp_path: Path, reference: Path, fault: str, at: str) -> None:
    """Break the remote while the run is in stage `at` of iteration 2 (the stages before it were
    recorded by an earlier, interrupted run, so the test computes only the rest)."""
    redo = list(STAGES[STAGES.index(at.split("@")[0]):])
    ws, remote = k.unfinished_copy(reference, tmp_path, "0002", redo)
    recipe = write_recipe(tmp_path / "micro.yaml")
    breaks, fix = FAULTS[fault]
    run = k.start_run(ws, recipe, 1)  # iteration 2
    try:
        deadline = time.monotonic() + 600
        while k.read_step(ws) != at:
            assert run.poll() is None and time.monotonic() < deadline, f"the run never reached {at}"
            time.sleep(0.05)
        breaks(remote)
        assert run.wait(timeout=900) == 2
    finally:
        k.kill_group(run)
    line = _error_line(ws)
    assert f"{remote}: DVC remote 'origin'" in line and "nothing was tagged" in line
    assert "Fix:" in line and "dvc remote modify origin url" in line and "rerun" in line
    assert "iter-0002" not in k.git(ws, "tag", "--list").split()
    fix(remote)
    proc = k.resume(ws, recipe, 2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected, got = k.lock_outs(reference), k.lock_outs(ws)
    assert {n: got.get(n) for n in expected} == expected
    assert k.problems_now(ws, remote, final=True) == [], "a tag points at data the remote lacks"
    assert "in sync" in k.dvc_status(ws, "-c") and k.git(ws, "status", "--porcelain") == ""
    assert k.git(ws, "tag", "--list", "iter-*").split() == ["iter-0000", "iter-0001", "iter-0002"]


def test_remote_removed_mid_run(tmp_path, micro_workspace):
    """A vanished local remote is an error, not silently made anew (a missing mount would be)."""
    _fault_mid_run(tmp_path, micro_workspace, "removed", "evaluate@0002")


@pytest.mark.slow
def test_remote_unwritable_mid_run(tmp_path, micro_workspace):
    _fault_mid_run(tmp_path, micro_workspace, "unwritable", "generate@0002")


@pytest.fixture
def unpushed(tmp_path, micro_workspace) -> tuple[Path, Path]:
    """A workspace whose iteration 2 is recorded in dvc.lock but not yet in the (copied) remote."""
    ws, remote = k.rewound_copy(micro_workspace, tmp_path, "iter-0002")
    k.prune_store(remote, k.referenced_objects(ws, "iter-0001"))
    return ws, remote


def _push_error(ws: Path) -> str:
    with pytest.raises(WorkspaceError) as err:
        push(ws)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_a_failed_push_is_one_line_with_the_cause_the_remote_and_the_fix(unpushed):
    ws, remote = unpushed
    _unwritable(remote)
    text = _push_error(ws)
    assert text.startswith(f"{remote}: DVC remote 'origin' could not be written (")
    assert "Not a directory" in text and "Fix: make it writable" in text
    _writable_again(remote)
    push(ws)
    assert k.bad_remote_objects(remote, unfinished_too=True) == [] and k.tagged_problems(ws, remote) == []


def test_a_missing_remote_is_not_created_by_push(unpushed):
    ws, remote = unpushed
    _removed(remote)
    assert _push_error(ws).startswith(f"{remote}: DVC remote 'origin' is missing")
    assert not remote.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_a_read_only_remote_is_refused_in_one_line(unpushed):
    ws, remote = unpushed
    for folder in [remote, *[p for p in remote.rglob("*") if p.is_dir()]]:
        folder.chmod(0o555)
    try:
        assert "could not be written (" in _push_error(ws)
    finally:
        for folder in [remote, *[p for p in remote.rglob("*") if p.is_dir()]]:
            folder.chmod(0o755)
