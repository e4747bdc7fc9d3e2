"""Train or generate on a Prefect work pool for real: a local Prefect server and a process worker on loopback,
the worker flow deployed with `flywheel deploy-worker`, and a nightly run that dispatches a stage.
The recorded iteration must equal the same iteration run locally (tests/conftest.py micro_workspace).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, dvc, git, write_recipe

BIN = Path(sys.executable).parent
POOL = "flywheel-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started here and the children it spawned (its own session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _api(url: str, path: str, body: dict | None = None):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def prefect_pool(tmp_path_factory):
    """A Prefect server, a process work pool with one worker, and the stage worker deployed on it.

    Only the subprocesses see PREFECT_API_URL; this test process keeps the suite's ephemeral mode."""
    base = tmp_path_factory.mktemp("prefect-server")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {**os.environ, "PREFECT_HOME": str(base / "home"), "PREFECT_API_URL": url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_LOGGING_LEVEL": "WARNING", "DVC_NO_ANALYTICS": "1"}
    procs = []
    try:
        port = url.rsplit(":", 1)[1].split("/")[0]
        procs.append(subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
                                      env=env, cwd=base, stdout=open(base / "server.log", "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 180
        while True:
            try:
                _api(url, "/health")
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise RuntimeError((base / "server.log").read_text()[-3000:]) from None
                time.sleep(1)
        subprocess.run([str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"], env=env,
                       check=True, capture_output=True, timeout=120)
        procs.append(subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
                                      env=env, cwd=base, stdout=open(base / "worker.log", "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        out = subprocess.run([sys.executable, "-m", "flywheel", "deploy-worker", "--pool", POOL, "--name", "cpu"],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "flywheel-stage/cpu" in out.stdout
        yield env, url, base
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.mark.parametrize("stage", ["train", "generate"])
def test_a_stage_on_a_work_pool_records_the_same_iteration_as_a_local_run(stage, prefect_pool, micro_workspace,
                                                                          tmp_path):
    env, url, base = prefect_pool
    recipe = write_recipe(tmp_path / "micro.yaml", {f"dispatch.{stage}": {
        "deployment": "flywheel-stage/cpu", "poll_interval_s": 1, "timeout_s": 600}})
    ws = tmp_path / "ws"
    run = subprocess.run([sys.executable, "-m", "flywheel", "run", "-w", str(ws), "--config", str(recipe), "-n", "1"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:] + (base / "worker.log").read_text()[-3000:]

    # the stage ran as a flow run of the deployment, on the worker; no other stage was dispatched
    assert sorted(p.name for p in (ws / "records" / "dispatch").iterdir()) == [f"{stage}@0001.json"]
    report = json.loads((ws / "records" / "dispatch" / f"{stage}@0001.json").read_text())
    flow_run = _api(url, f"/flow_runs/{report['flow_run']}")
    assert flow_run["state_type"] == "COMPLETED" and flow_run["name"] == f"{stage}@0001"
    assert flow_run["parent_task_run_id"]  # a subflow of the nightly run
    assert report["deployment"] == "flywheel-stage/cpu" and report["device"] == "cpu"

    # ... and the iteration is recorded exactly as the local run recorded it
    local = yaml.safe_load((micro_workspace / "dvc.lock").read_text())["stages"]
    remote = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert set(remote) == {s for s in local if "@" not in s or s.endswith("@0001")}
    for name, entry in remote.items():
        for key in ("cmd", "deps", "params", "outs"):
            assert entry.get(key) == local[name].get(key), (name, key)
    a, b = (json.loads((w / "records" / "0001.json").read_text()) for w in (ws, micro_workspace))
    for key in ("choice", "metrics", "gate", "eval", "promotion", "status", "next_parent", "device"):
        assert a[key] == b[key], key
    assert git(ws, "tag", "--list").split() == ["iter-0000", "iter-0001"]
    assert git(ws, "status", "--porcelain") == "" and "up to date" in dvc(ws, "status")
    # the workspace's remote holds the stage's outputs for anyone who clones it, like a local run's
    assert "in sync" in dvc(ws, "status", "--cloud", f"{stage}@0001")


def _run_dispatched(env: dict, tmp_path: Path, name: str, dispatch: dict) -> tuple[Path, subprocess.CompletedProcess]:
    recipe = write_recipe(tmp_path / f"{name}.yaml", {"dispatch.train": {"poll_interval_s": 1, **dispatch}})
    ws = tmp_path / name
    run = subprocess.run([sys.executable, "-m", "flywheel", "run", "-w", str(ws), "--config", str(recipe), "-n", "1"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return ws, run


def _nothing_recorded_after_warmup(ws: Path) -> None:
    assert git(ws, "tag", "--list").split() == ["iter-0000"]
    assert "train@0001" not in yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert not (ws / "records" / "0001.json").exists()
    assert not (ws / "records" / "dispatch" / "train@0001.json").exists()


def test_a_crashed_worker_run_fails_the_stage_and_records_nothing(prefect_pool, tmp_path):
    env, url, base = prefect_pool
    # the process worker runs `false` instead of the flow: the flow run ends Crashed
    ws, run = _run_dispatched(env, tmp_path, "crashed", {"deployment": "flywheel-stage/cpu", "timeout_s": 600,
                                                          "job_variables": {"command": "false"}})
    assert run.returncode == 5, run.stderr[-3000:]
    [last] = run.stderr.splitlines()  # the whole of stderr: one line, no traceback
    assert last.startswith("error: ") and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "train@0001" in last and "ended Crashed" in last and ".." not in last, run.stderr[-3000:]
    _nothing_recorded_after_warmup(ws)


def test_a_worker_that_never_starts_is_cancelled_after_the_timeout(prefect_pool, tmp_path):
    env, url, base = prefect_pool
    # a pool with no worker polling it: the run stays Scheduled until flywheel gives up on it
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", "flywheel-idle", "--type", "process"], env=env,
                   check=True, capture_output=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "flywheel", "deploy-worker", "--pool", "flywheel-idle",
                          "--name", "idle"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    ws, run = _run_dispatched(env, tmp_path, "idle", {"deployment": "flywheel-stage/idle", "timeout_s": 3})
    assert run.returncode == 5, run.stderr[-3000:]
    [last] = run.stderr.splitlines()  # the whole of stderr: one line, no traceback
    assert last.startswith("error: ") and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "did not finish within 3 s" in last and "dispatch.train.timeout_s" in last, run.stderr[-3000:]
    _nothing_recorded_after_warmup(ws)
    runs = _api(url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["train@0001"]}},
                                           "deployments": {"name": {"any_": ["idle"]}}})
    assert len(runs) == 1 and runs[0]["state_type"] in ("CANCELLING", "CANCELLED"), runs
