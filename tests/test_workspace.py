"""Workspaces: layout, the DVC pipeline template, and the one-run-per-workspace lock."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest
import yaml

from tasks.config.loading import load_recipe
from tasks.errors import WorkspaceBusyError
from tasks.pipeline import BOOTSTRAP_STAGES, ITERATION_STAGES, IterationVars, write_iteration_vars
from tasks.workspace.layout import Layout
from tasks.workspace.repo import PIPELINE_TEMPLATE, init_workspace, workspace_lock
from tests.conftest import dvc, git, write_recipe


@pytest.fixture
def workspace(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "micro.yaml"))
    return init_workspace(tmp_path / "ws", recipe)


def test_init_creates_git_dvc_repo_with_remote(workspace):
    assert (workspace.root / ".dvc").is_dir() and (workspace.root / ".git").is_dir()
    assert git(workspace.root, "log", "--format=%s") == "Initialise workspace micro"
    assert "origin" in dvc(workspace.root, "remote", "list")
    assert (workspace.root.parent / "ws-remote").is_dir()


def test_pipeline_template_paths_match_the_layout(workspace):
    """dvc.yaml and tasks/workspace/layout.py must name the same files, or DVC would track the wrong outputs."""
    write_iteration_vars(workspace, {"0001": IterationVars(parent="0000", init="0000", round=1)})
    L = Layout(workspace.root)
    from contextlib import chdir

    from dvc.repo import Repo

    with chdir(workspace.root), Repo(str(workspace.root)) as repo:
        outs = {st.addressing: {o.def_path for o in st.outs} for st in repo.index.stages}
    expected = {
        "prepare": [L.prompts], "base": [L.base_model], "warmup": [L.model("0000")], "reward": [L.reward_model],
        "calibrate@0001": [L.calibration("0001"), L.choice("0001")], "generate@0001": [L.samples("0001")],
        "score@0001": [L.scored("0001")], "select@0001": [L.selected("0001")], "check@0001": [L.gate("0001")],
        "train@0001": [L.model("0001")], "evaluate@0001": [L.eval_samples("0001")],
        "promote@0001": [L.promotion("0001")],
    }
    for name, paths in expected.items():
        assert {L.rel(p) for p in paths} <= outs[name], (name, outs[name])
    stages = set(yaml.safe_load(PIPELINE_TEMPLATE.read_text())["stages"])
    assert stages == set(BOOTSTRAP_STAGES) | set(ITERATION_STAGES)


def _hold_lock(root, ready):
    with workspace_lock(Layout(root)):
        ready.set()
        time.sleep(60)


def test_second_run_is_refused_and_a_killed_runs_lock_is_recovered(workspace):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(workspace.root, ready))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(WorkspaceBusyError, match=f"pid {holder.pid}"):
            with workspace_lock(workspace):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    # the lock file is still there, but its holder is dead: the next run proceeds
    assert workspace.lock.exists()
    with workspace_lock(workspace):
        assert workspace.lock.read_text() == str(os.getpid())


def test_two_workspaces_can_be_locked_at_once(tmp_path):
    a = init_workspace(tmp_path / "a", load_recipe(write_recipe(tmp_path / "r.yaml")))
    b = init_workspace(tmp_path / "b", load_recipe(tmp_path / "r.yaml"))
    with workspace_lock(a), workspace_lock(b):
        assert a.lock.exists() and b.lock.exists()
