"""Two real processes on one workspace: a second `flywheel run` is refused (exit 3) and the audit
commands work read-only while a run is inside its stages; the run then ends exactly as an
uninterrupted one, with nothing changed by the readers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tests import killing as k
from tests.conftest import ROOT, write_recipe

READERS = {
    "status": ["status", "--json"],
    "log": ["log", "--json"],
    "lineage": ["lineage", "1", "--json"],
    "diff": ["diff", "1", "2", "--json"],
    "reproduce": ["reproduce", "1", "--verify-only", "--json"],
}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flywheel", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def _wait_for_stage(ws, proc, prefix: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = k.read_step(ws)
        if step and step.startswith(prefix):
            return step
        assert proc.poll() is None, f"the run ended before {prefix}: {(ws.parent / 'runs.log').read_text()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError(f"the run never reached {prefix}")


def _check_reader(name: str, proc: subprocess.CompletedProcess) -> None:
    """Works (exit 0, JSON out) or is refused clearly (one `error:` line naming the fix)."""
    if proc.returncode == 0:
        json.loads(proc.stdout)
        return
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode in (2, 3) and errors and "Fix:" in errors[-1], (name, proc.returncode, proc.stderr[-2000:])


def test_a_second_run_is_refused_and_readers_change_nothing(tmp_path, micro_workspace):
    ws, remote = k.rewound_copy(micro_workspace, tmp_path, "iter-0001")
    recipe = write_recipe(tmp_path / "micro.yaml")
    first = k.start_run(ws, recipe, 1)  # iteration 2
    try:
        _wait_for_stage(ws, first, "generate@0002")
        second = _cli("run", "-w", str(ws), "-n", "1")
        assert second.returncode == 3, second.stderr[-3000:]
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and f"another flywheel run (pid {first.pid})" in last and "Fix:" in last
        # every reader starts while the run is inside a stage; they run side by side with it
        with ThreadPoolExecutor(len(READERS)) as pool:
            started = {name: pool.submit(_cli, *args, "-w", str(ws)) for name, args in READERS.items()}
            during = {name for name in started if first.poll() is None}
            for name, future in started.items():
                _check_reader(name, future.result())
        while first.poll() is None:  # and again, until the run is done
            for name, args in READERS.items():
                _check_reader(name, _cli(*args, "-w", str(ws)))
        assert first.wait(timeout=900) == 0, (ws.parent / "runs.log").read_text()[-6000:]
    finally:
        k.kill_group(first)
    assert during == set(READERS), f"only {sorted(during)} started while the run was in its stages"
    expected, got = k.lock_outs(micro_workspace), k.lock_outs(ws)
    assert {n: got.get(n) for n in expected} == expected
    assert k.git(ws, "status", "--porcelain") == "" and "up to date" in k.dvc_status(ws)
    assert k.problems_now(ws, remote, final=True) == []
    assert k.git(ws, "tag", "--list", "iter-*").split() == ["iter-0000", "iter-0001", "iter-0002"]
    # and after it: the readers see the finished iteration
    assert [r["iteration"] for r in json.loads(_cli("log", "--json", "-w", str(ws)).stdout)] == ["0000", "0001", "0002"]


def test_two_commands_creating_one_workspace_at_once(tmp_path):
    """The loser is refused (exit 3 on the lock, or 2 once the folder is a workspace) and never removes or
    half-initialises the winner's folder."""
    recipe = write_recipe(tmp_path / "micro.yaml")
    for attempt in range(3):
        ws = tmp_path / f"ws{attempt}"
        procs = [subprocess.Popen([sys.executable, "-m", "flywheel", "init", str(ws), "-c", str(recipe)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
        codes = sorted(rc for rc, _ in results)
        # exit 3: it met the winner's lock; exit 2: it started after the winner had finished (a busy machine)
        assert codes in ([0, 3], [0, 2]), results
        loser = next(err for rc, err in results if rc != 0).strip().splitlines()[-1]
        assert loser.startswith("error: ") and "Fix:" in loser
        assert k.git(ws, "log", "--format=%s").splitlines() == ["Initialise workspace micro"]
        assert k.fsck_ok(ws)[0] and (ws / "flywheel.yaml").is_file() and (ws / ".dvc" / "config").is_file()
