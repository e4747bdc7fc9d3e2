"""Expected failures read like normal events: one `error:` line on stderr and their exit code, no
traceback. What needs no Prefect (the lock, the recipe, the data) is refused before Prefect is even
imported; what fails inside a flow keeps its traceback in the run's log file. A bug still prints
its traceback, with the log file's path.

Each command runs as a user runs it, in a subprocess; the whole of stderr is compared."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.config.loading import load_recipe
from tasks.errors import WorkspaceBusyError
from tasks.workspace.layout import Layout
from tasks.workspace.repo import holds_lock, init_workspace, workspace_lock
from tests.conftest import ROOT, dvc, write_recipe

# The real CLI; on exit it reports on stdout whether Prefect was imported at all.
CLI = ("import json, sys\nsys.argv[0] = 'flywheel'\nfrom flywheel.cli import main\ntry:\n    main()\n"
       "finally:\n    print(json.dumps({'prefect_imported': 'prefect' in sys.modules}))")


def flywheel(*args: str, cwd: Path = ROOT, code: str = CLI, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=env)


@pytest.fixture(scope="module")
def own_prefect(tmp_path_factory) -> dict:
    """An environment whose ephemeral Prefect API has a database of its own, shared by this module's
    runs only: two ephemeral servers on one SQLite file (a run's and the test process's) have lost
    a just-created flow run. Creating the database is slow on a loaded machine, hence the timeout."""
    return {**os.environ, "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}


def prefect_imported(proc: subprocess.CompletedProcess) -> bool:
    return json.loads(proc.stdout.strip().splitlines()[-1])["prefect_imported"]


def only_error_line(proc: subprocess.CompletedProcess) -> str:
    """The whole stderr: exactly one line, an `error:` line, and no traceback."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def workspace(tmp_path) -> Layout:
    return init_workspace(tmp_path / "ws", load_recipe(write_recipe(tmp_path / "micro.yaml")))


def _hold(root: str, ready, release) -> None:
    with workspace_lock(Layout(Path(root))):
        ready.set()
        release.wait(120)


@pytest.fixture
def held(workspace):
    """The workspace's lock, held by another process until the test ends."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(workspace.root), ready, release))
    holder.start()
    assert ready.wait(60)
    yield holder.pid
    release.set()
    holder.join(30)
    if holder.is_alive():
        os.kill(holder.pid, signal.SIGKILL)


# --- refused before Prefect ----------------------------------------------------------------------

def test_a_busy_workspace_is_refused_in_one_line_before_prefect(workspace, held):
    proc = flywheel("run", "-w", str(workspace.root))
    assert proc.returncode == 3
    line = only_error_line(proc)
    assert f"another flywheel run (pid {held}) is using this workspace" in line and "Fix: wait" in line
    assert not prefect_imported(proc)
    assert not (workspace.state_dir / "logs").exists()  # no run was started
    # found from the current folder instead of -w: the workspace is named first, then refused
    here = flywheel("run", cwd=workspace.root / "records")
    assert here.returncode == 3 and not prefect_imported(here)
    assert here.stderr.splitlines() == [f"workspace: {workspace.root} (the workspace you are in)", line]


def test_a_bad_recipe_is_refused_in_one_line_before_prefect(tmp_path):
    recipe = write_recipe(tmp_path / "bad.yaml", {"generate.kk": 3})
    proc = flywheel("run", "-w", str(tmp_path / "new"), "-c", str(recipe))
    assert proc.returncode == 2
    assert "generate.kk: unknown key. Fix: did you mean 'k'?" in only_error_line(proc)
    assert not prefect_imported(proc) and not (tmp_path / "new").exists()


def test_a_broken_workspace_recipe_is_refused_in_one_line_before_prefect(workspace):
    workspace.recipe.write_text(workspace.recipe.read_text().replace("k: 2", "k: -1"))
    proc = flywheel("run", "-w", str(workspace.root))
    assert proc.returncode == 2 and "generate.k" in only_error_line(proc)
    assert not prefect_imported(proc)


def test_a_missing_engine_is_refused_before_prefect(workspace):
    workspace.recipe.write_text(workspace.recipe.read_text().replace("backend: hf", "backend: vllm"))
    # an interpreter on which vLLM cannot import
    code = "import sys; sys.modules['vllm'] = None\n" + CLI
    proc = flywheel("run", "-w", str(workspace.root), code=code)
    assert proc.returncode == 2
    assert "generate.backend is 'vllm' but vLLM does not import here" in only_error_line(proc)
    assert not prefect_imported(proc)


# --- the lock: re-entrant in its process, and the flow cannot run without it ----------------------

def test_the_lock_is_reentrant_in_its_process_and_exclusive_across_processes(workspace):
    probe = ("import sys; from pathlib import Path; from tasks.workspace.layout import Layout\n"
             "from tasks.workspace.repo import workspace_lock\n"
             "try:\n    with workspace_lock(Layout(Path(sys.argv[1]))): print('acquired')\n"
             "except Exception as err: print(type(err).__name__)")

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(workspace.root)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120).stdout.strip()

    with workspace_lock(workspace):
        with workspace_lock(Layout(workspace.root / "records" / "..")):  # the same workspace, spelled otherwise
            assert holds_lock(workspace)
        assert holds_lock(workspace)  # the inner exit did not release it
        assert other_process() == "WorkspaceBusyError"
    assert not holds_lock(workspace)
    assert other_process() == "acquired"


def test_the_flow_takes_the_lock_itself_when_no_cli_holds_it(workspace, held):
    """As a deployment or `serve` starts it: the flow refuses a workspace another run holds."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows.nightly import flywheel_flow

    # a loaded 2-core machine can take longer than Prefect's 20 s to start the ephemeral API
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 300}), \
            pytest.raises(WorkspaceBusyError, match=f"pid {held}"):
        flywheel_flow(str(workspace.root), 1)
    assert not (workspace.root / "data").exists()  # nothing ran


# --- failures inside a flow ----------------------------------------------------------------------

# The CLI's `run`, with the nightly flow replaced by one that fails the way the real one can: a stage
# task inside the iteration subflow raises. The flow re-enters the lock, as flows/nightly.py does.
FAKE_FLOW = """
import sys
from pathlib import Path
from prefect import flow, task
import flows.nightly
from tasks.workspace.layout import Layout
from tasks.workspace.repo import holds_lock, workspace_lock

KIND = sys.argv.pop(1)

@task(retries=0)
def stage(root):
    (Path(root) / "held.txt").write_text(str(holds_lock(Layout(Path(root)))))
    if KIND == "dispatch":
        from tasks.placement.dispatch import DispatchError
        raise DispatchError("train@0001: the worker run calm-fox ended Crashed: exit code 1.",
                            fix="see that flow run's logs in Prefect; nothing was recorded.")
    raise RuntimeError("a bug in a stage")

@flow(name="flywheel-iteration")
def iteration(root):
    stage(root)

@flow(name="flywheel")
def fake_flywheel_flow(workspace, iterations=None):
    with workspace_lock(Layout(Path(workspace))):
        iteration(workspace)

flows.nightly.flywheel_flow = fake_flywheel_flow
""" + CLI


def test_an_expected_failure_inside_a_flow_is_one_line_and_its_traceback_is_logged(workspace, own_prefect):
    proc = flywheel("dispatch", "run", "-w", str(workspace.root), code=FAKE_FLOW, env=own_prefect)
    assert proc.returncode == 5, proc.stderr[-3000:]
    assert "the worker run calm-fox ended Crashed" in only_error_line(proc)
    assert (workspace.root / "held.txt").read_text() == "True"  # the stage ran under the CLI's lock
    [log] = (workspace.state_dir / "logs").glob("*-run-*.log")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "tasks.placement.dispatch.DispatchError: train@0001" in text
    assert "Task run failed with exception: DispatchError" in text  # the engine's records, kept from the console
    assert text.count("Encountered exception during execution") == 2  # the iteration subflow and the run


def test_a_bug_prints_its_traceback_and_the_log_files_path(workspace, own_prefect):
    proc = flywheel("bug", "run", "-w", str(workspace.root), code=FAKE_FLOW, env=own_prefect)
    assert proc.returncode == 1
    [log] = (workspace.state_dir / "logs").glob("*-run-*.log")
    lines = proc.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and "RuntimeError: a bug in a stage" in lines
    assert lines[-1].startswith("error: unexpected RuntimeError: a bug in a stage (a bug")
    assert lines[-1].endswith(f"The run's full log: {log}")
    assert proc.stderr.count("Traceback (most recent call last)") == 1  # the CLI's, not Prefect's as well
    assert "RuntimeError: a bug in a stage" in log.read_text()


# --- reproduction that does not match ------------------------------------------------------------

def test_a_reproduction_mismatch_is_one_line_after_the_table(micro_workspace, tmp_path):
    remote = Path(dvc(micro_workspace, "remote", "list").split()[1])
    bad_remote = tmp_path / "remote"
    shutil.copytree(remote, bad_remote)
    lock = yaml.safe_load((micro_workspace / "dvc.lock").read_text())["stages"]
    target = next(o for o in lock["select@0002"]["outs"] if o["path"].endswith("selected.parquet"))
    obj = bad_remote / "files" / "md5" / target["md5"][:2] / target["md5"][2:]
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes() + b"tampered")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    dvc(clone, "remote", "modify", "--local", "origin", "url", str(bad_remote))
    proc = flywheel("reproduce", "2", "-w", str(clone), "--verify-only")
    assert proc.returncode == 1
    line = only_error_line(proc)
    assert "iteration 0002 did not reproduce: 1 of " in line
    # DVC refuses an object whose hash is wrong, so the tampered file counts as missing from the remote
    assert "(data/iterations/0002/selected.parquet missing-from-remote)" in line
    assert proc.stdout.lstrip().startswith("reproduction")  # the table is still printed, on stdout


def test_prefect_not_starting_is_an_expected_failure_not_a_bug(monkeypatch):
    from flywheel.common import prefect_did_not_start

    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    err = prefect_did_not_start(RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server."))
    assert err is not None and err.exit_code == 2
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in str(err) and "(now 120 s)" in str(err)
    assert prefect_did_not_start(RuntimeError("a bug in a stage")) is None
    assert prefect_did_not_start(ValueError("ephemeral Prefect API server")) is None
