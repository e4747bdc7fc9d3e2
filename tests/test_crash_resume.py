"""Crash safety for real: SIGKILL a `flywheel run` subprocess at a stage, run again, and the
finished workspace must hash exactly like an uninterrupted run with the same seeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import flywheel, git, write_recipe

FAST_KILL_POINTS = ["generate@0001", "train@0001", "finish@0001"]
ALL_KILL_POINTS = ["warmup", "calibrate@0001", "score@0001", "select@0001", "check@0001", "evaluate@0001",
                   "promote@0001", "generate@0002", "finish@0002"]


def _outs(ws: Path) -> dict[str, list]:
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return {name: sorted((o["path"], o.get("md5")) for o in st.get("outs", [])) for name, st in lock.items()}


def _kill_at(ws: Path, recipe: Path, step: str, timeout: float = 300) -> None:
    """Start a run and SIGKILL its whole process group as soon as it reports `step`."""
    proc = subprocess.Popen([sys.executable, "-m", "flywheel", "run", "-w", str(ws), "-c", str(recipe), "-n", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    progress = ws / ".flywheel" / "progress.json"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"run finished before reaching {step}")
            try:
                if json.loads(progress.read_text())["step"] == step:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.02)
        else:
            pytest.fail(f"run never reached {step}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _kill_and_resume(tmp_path: Path, reference: Path, step: str) -> None:
    recipe = write_recipe(tmp_path / "micro.yaml")
    ws = tmp_path / "ws"
    _kill_at(ws, recipe, step)
    it = step.split("@")[1] if "@" in step else "0000"
    tags = git(ws, "tag", "--list").split()
    if not step.startswith("finish"):
        assert f"iter-{it}" not in tags, "a killed iteration must not be tagged"
    flywheel("run", "-w", str(ws), "-n", "2")
    expected, got = _outs(reference), _outs(ws)
    assert {name: got.get(name) for name in expected} == expected
    assert git(ws, "status", "--porcelain") == ""
    for tag in git(reference, "tag", "--list").split():
        assert tag in git(ws, "tag", "--list").split()


@pytest.mark.parametrize("step", FAST_KILL_POINTS)
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, micro_workspace, step):
    _kill_and_resume(tmp_path, micro_workspace, step)


@pytest.mark.slow
@pytest.mark.parametrize("step", ALL_KILL_POINTS)
def test_sigkill_at_every_stage_then_resume(tmp_path, micro_workspace, step):
    _kill_and_resume(tmp_path, micro_workspace, step)
