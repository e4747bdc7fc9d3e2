"""Pinned numeric settings and the one-process-per-stage runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tasks.audit.reproduce import VersionDriftError, check_numerics
from tasks.config.recipe import NumericsConfig
from tasks.errors import InputDataError
from tasks.numerics.state import available_cores, pin, resolve, stage_env
from tasks.placement.stage_process import StageProcessError, run_stage_isolated
from tasks.workspace.layout import Layout
from tests.conftest import MICRO_RECIPE, ROOT


def test_auto_threads_resolve_to_this_machines_cores(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    cfg = resolve(NumericsConfig())
    assert cfg.threads == cfg.interop_threads == available_cores()
    assert resolve(NumericsConfig(threads=3)).threads == 3
    env = stage_env(NumericsConfig(threads=3, cpu_path="portable"))
    assert {k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")} == {
        "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    assert env["MKL_CBWR"] == "AVX2,STRICT" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert resolve(NumericsConfig()).cpu_path == "portable"  # a new workspace's default, frozen at init


def test_pin_sets_threads_even_after_a_library_replaced_torch_set_num_threads(monkeypatch):
    before = torch.get_num_threads()
    # what vLLM's CPU worker does once it has bound its threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    try:
        state = pin(NumericsConfig(threads=1))
        assert state["threads"] == torch.get_num_threads() == 1
        assert state["deterministic"] is False and state["matmul_precision"] == "highest"
    finally:
        torch._C.set_num_threads(before)


def test_a_different_cpu_kernel_set_is_refused_before_reproducing():
    recorded = {"threads": 2, "cores": available_cores(), "cpu_capability": "NO_SUCH_ISA", "mkldnn": True}
    with pytest.raises(VersionDriftError, match="cpu_capability"):
        check_numerics({"numerics": recorded}, allow_drift=False)
    notes = check_numerics({"numerics": recorded}, allow_drift=True)
    assert any(n.startswith("bits may not match") for n in notes)


def test_another_core_count_is_noted_not_refused():
    from tasks.numerics.state import record

    recorded = {**record(NumericsConfig()), "cores": available_cores() + 6, "threads": available_cores() + 6}
    notes = check_numerics({"numerics": recorded}, allow_drift=False)
    assert any("pinned to the recorded" in n for n in notes)


@pytest.fixture
def bare_workspace(tmp_path) -> Layout:
    (tmp_path / "flywheel.yaml").write_text(yaml.safe_dump(MICRO_RECIPE))
    return Layout(tmp_path)


def test_a_stage_error_comes_back_from_its_process_as_itself(bare_workspace):
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        run_stage_isolated(bare_workspace, "nope")


def test_a_user_error_keeps_its_type_and_one_line_message(bare_workspace):
    missing = bare_workspace.root / "missing.jsonl"
    recipe = {**MICRO_RECIPE, "prompts": {"source": {"type": "file", "path": str(missing)}}}
    (bare_workspace.root / "flywheel.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(InputDataError) as err:  # raised inside the stage's process
        run_stage_isolated(bare_workspace, "prepare")
    assert str(missing) in str(err.value) and "prompts.source.path" in str(err.value) and "\n" not in str(err.value)


def test_a_stage_process_that_dies_is_reported(bare_workspace, monkeypatch):
    import tasks.placement.stage_process as sp

    monkeypatch.setattr(sp.os, "getpid", lambda: 1)  # the child then sees another parent than it was told: gone
    with pytest.raises(StageProcessError, match="died with exit code 137"):
        run_stage_isolated(bare_workspace, "prepare")


CHILD = """
import os, sys, time
from tasks.placement.stage_process import _die_with_parent
_die_with_parent()
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(120)
"""
PARENT = """
import os, subprocess, sys, time
env = {**os.environ, "FLYWHEEL_STAGE_PARENT": str(os.getpid())}
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=env)
time.sleep(120)
"""


def test_a_stage_process_never_outlives_its_parent(tmp_path):
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(pidfile)], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not pidfile.is_file() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the stage process never started"
        time.sleep(0.1)
    child = int(pidfile.read_text())
    os.kill(parent.pid, signal.SIGKILL)  # the parent alone, not its process group
    parent.wait()
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail("the stage process outlived its parent")
