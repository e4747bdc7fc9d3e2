"""A workspace recorded by the previous release (before tasks/ was grouped into subpackages) still
works with this code: its lineage reads, its iteration reproduces bit for bit, and a run extends it.

The fixture (tests/fixtures/previous_release/) is that workspace's git bundle and DVC remote."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, dvc, flywheel, git

FIXTURE = ROOT / "tests" / "fixtures" / "previous_release"


@pytest.fixture(scope="module")
def old_workspace(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("previous")
    with tarfile.open(FIXTURE / "remote.tar.gz") as tar:
        tar.extractall(base, filter="data")
    ws = base / "ws"
    subprocess.run(["git", "clone", "-q", str(FIXTURE / "workspace.bundle"), str(ws)], check=True)
    dvc(ws, "remote", "modify", "--local", "origin", "url", str(base / "ws-remote"))  # the remote moved
    dvc(ws, "pull", "-q")
    return ws


def test_the_fixture_is_a_workspace_of_the_previous_layout(old_workspace):
    assert git(old_workspace, "tag", "--list").split() == ["iter-0000", "iter-0001"]
    record = json.loads((old_workspace / "records" / "0001.json").read_text())
    assert record["status"] == "completed"


def test_lineage_of_the_previous_release(old_workspace):
    out = flywheel("lineage", "-w", str(old_workspace), "1").stdout
    assert "iter-0001" in out and "code 647c6966d7" in out  # recorded by the previous release's code
    assert "parent model  models/0000" in out and "← warmup" in out


def test_reproduce_the_previous_release_bit_for_bit(old_workspace):
    proc = flywheel("reproduce", "-w", str(old_workspace), "1", check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # recorded before the portable CPU path: said in one line before any compute (it was recorded with
    # the portable path's variables in its environment, so it reproduces on any x86-64 machine all the same)
    said = [line for line in proc.stderr.splitlines() if "recorded before the portable CPU path" in line]
    assert len(said) == 1 and said[0].startswith("note: bits may not match"), proc.stderr[-2000:]
    results = [line.split("│")[-2].strip() for line in proc.stdout.splitlines() if "@0001" in line]
    assert len(results) >= 12 and set(results) == {"match"}  # every stage's outputs, checkpoint included
    assert any("train@0001" in line and "models/0001" in line for line in proc.stdout.splitlines())


def test_run_extends_the_previous_release(old_workspace):
    flywheel("run", "-w", str(old_workspace), "-n", "1", timeout=900)
    assert git(old_workspace, "tag", "--list").split() == ["iter-0000", "iter-0001", "iter-0002"]
    record = json.loads((old_workspace / "records" / "0002.json").read_text())
    assert record["status"] in {"completed", "held"} and record["parent"] == "0001"
