"""`flywheel serve` (flywheel/run_cmd.py): a real deployment served against a loopback Prefect
server, run once by a manual trigger."""

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

from tests.conftest import git, write_recipe

PREFECT = str(Path(sys.executable).parent / "prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout} s")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def prefect_server(tmp_path):
    """A Prefect API server on 127.0.0.1 with a database of its own; its URL and environment."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-server"), "PREFECT_API_URL": url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: _healthy(url), 240, "prefect server start", server)
        yield url, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


@pytest.mark.slow
def test_serve_runs_the_deployment_once_when_triggered(prefect_server, tmp_path):
    _, env = prefect_server
    recipe = write_recipe(tmp_path / "micro.yaml")
    ws = tmp_path / "ws"
    subprocess.run([sys.executable, "-m", "flywheel", "init", str(ws), "-c", str(recipe)], env=env, check=True,
                   capture_output=True)
    serve_log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([sys.executable, "-m", "flywheel", "serve", "-w", str(ws), "-n", "1", "--name", "e2e",
                              "--cron", "0 0 1 1 *"], env=env, stdout=serve_log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        def deployed() -> bool:
            ls = subprocess.run([PREFECT, "deployment", "inspect", "flywheel/e2e"], env=env, capture_output=True,
                                text=True)
            return ls.returncode == 0
        _wait_for(deployed, 240, "flywheel serve registers the deployment", serve)
        inspect = subprocess.run([PREFECT, "--no-prompt", "deployment", "inspect", "flywheel/e2e", "--output", "json"],
                                 env=env, capture_output=True, text=True, check=True)
        deployment = json.loads(inspect.stdout)
        assert deployment["parameters"] == {"workspace": str(ws.resolve()), "iterations": 1}
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 0 1 1 *"]
        assert not (ws / "records" / "0000.json").exists()  # nothing ran before the trigger
        run = subprocess.run([PREFECT, "deployment", "run", "flywheel/e2e", "--watch", "--watch-timeout", "900"],
                             env=env, capture_output=True, text=True, timeout=960)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + (tmp_path / "serve.log").read_text()[-3000:]
        assert "Completed" in run.stdout + run.stderr
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        serve_log.close()
    assert git(ws, "tag", "--list", "iter-*").split() == ["iter-0000", "iter-0001"]
    record = json.loads((ws / "records" / "0001.json").read_text())
    assert record["status"] == "completed" and record["cost"]["stages"]
    runs = subprocess.run([PREFECT, "flow-run", "ls", "--state", "COMPLETED"], env={**env, "COLUMNS": "300"},
                          capture_output=True, text=True, check=True).stdout
    assert " flywheel " in runs and "iteration-0001" in runs  # the server holds the run and its subflows
