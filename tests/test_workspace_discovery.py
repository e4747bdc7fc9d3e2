"""Which workspace a command acts on: -w, then FLYWHEEL_WORKSPACE, then the workspace the current
folder lies in (walking up, as git does), then the default one. Every command says which one it
used when it was not named, and a folder that is only part of a workspace is refused in one line.

The code repo's default workspace is replaced here by a synthetic one with other iterations, so an
answer about the wrong workspace cannot pass for the right one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tasks.workspace.repo as workspace_mod
from bench.lineage_speed import synthesize
from flywheel.cli import app
from tasks.workspace.repo import ENV_VAR, find_enclosing_workspace, resolve_target
from tests.conftest import dvc, git

runner = CliRunner()


@pytest.fixture(scope="module")
def fake_default(tmp_path_factory) -> Path:
    """Five synthetic iterations: more than the micro workspace has, with other commits."""
    return synthesize(tmp_path_factory.mktemp("default") / "default", iterations=5, n_prompts=8, k=2)


@pytest.fixture(autouse=True)
def _default_is_fake(monkeypatch, fake_default):
    monkeypatch.setattr(workspace_mod, "DEFAULT_WORKSPACE", fake_default)
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def pulled_clone(micro_workspace, tmp_path_factory) -> Path:
    """An audit clone: `git clone` + `dvc pull` of the micro workspace, with a remote of its own."""
    clone = tmp_path_factory.mktemp("audit") / "audit"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    dvc(clone, "pull", "-q")
    return clone


def invoke(args: list[str], cwd: Path, monkeypatch, env: dict | None = None):
    monkeypatch.chdir(cwd)
    return runner.invoke(app, args, env=env)


def commits(ws: Path) -> dict[str, str]:
    tags = git(ws, "tag", "--list", "iter-*").split()
    return {t.removeprefix("iter-"): git(ws, "rev-parse", f"{t}^{{commit}}") for t in tags}


def announced(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("workspace: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("workspace: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- the resolution order, without the CLI -------------------------------------------------------

def test_resolution_order(tmp_path, micro_workspace, fake_default):
    inside = micro_workspace / "data" / "iterations"
    assert resolve_target(None, cwd=inside, env={}) == workspace_mod.Target(micro_workspace, "cwd")
    assert resolve_target(None, cwd=inside, env={ENV_VAR: str(fake_default)}).source == "env"
    assert resolve_target(tmp_path, cwd=inside, env={ENV_VAR: str(fake_default)}) == \
        workspace_mod.Target(tmp_path, "option")
    assert resolve_target(None, cwd=tmp_path, env={}) == workspace_mod.Target(fake_default, "default")
    # `dvc repro` runs `flywheel stage` in the repo it names; that beats FLYWHEEL_WORKSPACE there only
    under = {"DVC_STAGE": "generate@0001", "DVC_ROOT": str(micro_workspace), ENV_VAR: str(fake_default)}
    assert resolve_target(None, cwd=tmp_path, env=under, under_dvc=True).source == "dvc"
    assert resolve_target(None, cwd=tmp_path, env=under).source == "env"


def test_the_walk_up_stops_at_a_git_repository_that_is_not_a_workspace(tmp_path, micro_workspace):
    repo = tmp_path / "code"
    (repo / "src").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert find_enclosing_workspace(repo / "src") is None
    assert find_enclosing_workspace(micro_workspace / "models") == micro_workspace


# --- every read-only command reads the workspace it is run in ------------------------------------

READ_ONLY = ["log", "status", "lineage", "diff", "sql"]


def _check(cmd: str, result, ws: Path) -> None:
    """Assert that `cmd`'s JSON output describes `ws`, by its own commits and records."""
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    expected = commits(ws)
    if cmd == "log":
        assert {r["iteration"]: r["commit"] for r in out} == expected
    elif cmd == "status":
        assert sorted(r["iteration"] for r in out) == sorted(p.stem for p in (ws / "records").glob("0*.json"))
    elif cmd == "lineage":
        assert out["commit"] == expected["0002"]
    elif cmd == "diff":
        assert out["a"] == "0001" and str(ws.resolve()) in out["table"]["a_source"]
    elif cmd == "sql":
        assert {(r["iteration"], r["commit"]) for r in out} == {(k, v) for k, v in expected.items() if k != "0000"}


ARGS = {"log": ["log", "--json"], "status": ["status", "--json"], "lineage": ["lineage", "2", "--json"],
        "diff": ["diff", "1", "2", "--json"],
        "sql": ["sql", "SELECT DISTINCT iteration, commit FROM artifacts WHERE iteration <> '0000'", "--json"]}


@pytest.mark.parametrize("where", [".", "data/iterations/0001", "records"])
@pytest.mark.parametrize("cmd", READ_ONLY)
def test_read_only_commands_use_the_workspace_they_are_run_in(cmd, where, pulled_clone, monkeypatch):
    result = invoke(ARGS[cmd], pulled_clone / where, monkeypatch)
    _check(cmd, result, pulled_clone)
    assert announced(result) == f"workspace: {pulled_clone.resolve()} (the workspace you are in)"


def test_reproduce_uses_the_clone_it_is_run_in(pulled_clone, fake_default, monkeypatch):
    # the clone has two iterations and the default five: iteration 3 exists only in the default
    missing = invoke(["reproduce", "3", "--verify-only"], pulled_clone, monkeypatch)
    assert missing.exit_code == 2 and "iteration 0003" in one_error_line(missing)
    assert announced(missing) == f"workspace: {pulled_clone.resolve()} (the workspace you are in)"
    # from a subfolder: the clone's history and remote reproduce its own iteration 1
    result = invoke(["reproduce", "1", "--verify-only", "--json"], pulled_clone / "records", monkeypatch)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["iteration"] == "0001" and report["checked"] > 0
    assert announced(result) == f"workspace: {pulled_clone.resolve()} (the workspace you are in)"


@pytest.mark.parametrize("cmd", READ_ONLY)
def test_environment_variable_and_option_override_the_current_folder(cmd, pulled_clone, micro_workspace,
                                                                     monkeypatch):
    by_env = invoke(ARGS[cmd], pulled_clone / "records", monkeypatch, env={ENV_VAR: str(micro_workspace)})
    _check(cmd, by_env, micro_workspace)
    assert announced(by_env) == (f"workspace: {micro_workspace} (from {ENV_VAR}, "
                                 f"not {pulled_clone.resolve()} where you are)")
    # -w wins over both, and a workspace named with -w is not announced
    by_option = invoke([*ARGS[cmd], "-w", str(micro_workspace)], pulled_clone / "records", monkeypatch,
                       env={ENV_VAR: str(pulled_clone)})
    _check(cmd, by_option, micro_workspace)
    assert "workspace: " not in by_option.stderr


def test_outside_any_workspace_the_default_is_used_and_named(tmp_path, fake_default, monkeypatch):
    result = invoke(["log", "--json"], tmp_path, monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert [r["iteration"] for r in json.loads(result.stdout)] == ["0000", "0001", "0002", "0003", "0004", "0005"]
    assert announced(result).startswith(f"workspace: {fake_default} (the default; ")


def test_audit_commands_never_create_the_default(tmp_path, monkeypatch):
    monkeypatch.setattr(workspace_mod, "DEFAULT_WORKSPACE", tmp_path / "default")
    for args in (["log"], ["status"], ["lineage", "1"], ["sql", "SELECT 1"], ["reproduce", "1"], ["serve"]):
        result = invoke(args, tmp_path, monkeypatch)
        assert result.exit_code == 2, (args, result.stderr)
        line = one_error_line(result)
        assert "no workspace to use" in line and "flywheel run" in line, args
    assert not (tmp_path / "default").exists()


# --- wrong targets are refused in one line ------------------------------------------------------

def test_a_partial_copy_of_a_workspace_is_refused_not_passed_over(tmp_path, micro_workspace, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(micro_workspace, copy, ignore=shutil.ignore_patterns(".git", ".dvc"))
    for args in (["log"], ["lineage", "1"], ["run", "-n", "1"]):
        result = invoke(args, copy / "records", monkeypatch)
        assert result.exit_code == 2, (args, result.stderr)
        line = one_error_line(result)
        assert "looks like a flywheel workspace but is not complete" in line, line
        assert ".git (its git history)" in line and ".dvc (its DVC folder)" in line and "git clone" in line
        assert str(copy) in line
    named = invoke(["status", "-w", str(copy)], tmp_path, monkeypatch)
    assert named.exit_code == 2 and "not complete" in one_error_line(named)
    assert not (workspace_mod.DEFAULT_WORKSPACE / ".flywheel").exists()  # the run did not fall back


def test_a_subfolder_named_with_w_points_at_its_workspace(micro_workspace, tmp_path, monkeypatch):
    for args in (["log"], ["run"], ["run", "-c", "configs/tiny-arith.yaml"]):
        for sub in ("records", "data/new"):  # an existing folder, and one `run` would otherwise create
            result = invoke([*args, "-w", str(micro_workspace / sub)], tmp_path, monkeypatch)
            assert result.exit_code == 2, (args, sub, result.stderr)
            assert f"lies inside the workspace {micro_workspace}" in one_error_line(result)
    assert not (micro_workspace / "data" / "new").exists()


def test_a_clone_without_data_is_refused_where_data_is_needed(micro_workspace, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    for args in (["lineage", "2"], ["diff", "1", "2"], ["sql", "SELECT count(*) FROM samples"], ["run"]):
        result = invoke(args, clone / "records", monkeypatch)
        assert result.exit_code == 2, (args, result.stderr)
        assert "this clone has no data yet: run `dvc pull`" in one_error_line(result), args
    assert not (clone / ".flywheel").exists()  # `run` refused before taking the lock
    # what needs only the committed records still answers
    log = invoke(["log", "--json"], clone, monkeypatch)
    assert log.exit_code == 0 and [r["iteration"] for r in json.loads(log.stdout)] == ["0000", "0001", "0002"]


def test_missing_artifacts_are_named_and_the_rest_is_read(pulled_clone, tmp_path, monkeypatch):
    partial = tmp_path / "partial"
    subprocess.run(["git", "clone", "-q", str(pulled_clone), str(partial)], check=True)
    shutil.copytree(pulled_clone / ".dvc" / "cache", partial / ".dvc" / "cache")
    dvc(partial, "checkout", "-q")
    (partial / "data/iterations/0001/samples.parquet").unlink()
    result = invoke(["sql", "SELECT DISTINCT iteration FROM samples", "--json"], partial, monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [{"iteration": "0002"}]
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "1 of " in notes[0] and "data/iterations/0001/samples.parquet" in notes[0]
    assert "dvc pull" in notes[0]
    # a run would extend a history it cannot read back: refused, naming the file
    run = invoke(["run"], partial, monkeypatch)
    assert run.exit_code == 2 and "data/iterations/0001/samples.parquet" in one_error_line(run)


# --- `run` extends the workspace it is run in ----------------------------------------------------

RUN_WITH_FAKE_DEFAULT = ("import sys; from pathlib import Path; import tasks.workspace.repo as w; "
                         "w.DEFAULT_WORKSPACE = Path(sys.argv.pop(1)); sys.argv[0] = 'flywheel'; "
                         "from flywheel.cli import main; main()")


def test_run_inside_a_workspace_extends_it(pulled_clone, tmp_path, fake_default):
    clone = tmp_path / "night"
    subprocess.run(["git", "clone", "-q", str(pulled_clone), str(clone)], check=True)
    shutil.copytree(pulled_clone / ".dvc" / "cache", clone / ".dvc" / "cache")
    dvc(clone, "checkout", "-q")
    (tmp_path / "night-remote").mkdir()
    dvc(clone, "remote", "modify", "--local", "origin", "url", str(tmp_path / "night-remote"))
    before = commits(fake_default)
    proc = subprocess.run([sys.executable, "-c", RUN_WITH_FAKE_DEFAULT, str(fake_default), "run", "-n", "1"],
                          cwd=clone / "records", capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert git(clone, "tag", "--list").split() == ["iter-0000", "iter-0001", "iter-0002", "iter-0003"]
    assert json.loads((clone / "records" / "0003.json").read_text())["iteration"] == "0003"
    named = [ln for ln in proc.stderr.splitlines() if ln.startswith("workspace: ")]
    assert named == [f"workspace: {clone.resolve()} (the workspace you are in)"], proc.stderr[-2000:]
    assert commits(fake_default) == before and not (fake_default / ".flywheel").exists()
