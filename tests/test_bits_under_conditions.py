"""The harness for "same machine, other bits": the shipped default's warm-up stage, run again and again
in its own process under the conditions a user's run meets (a terminal or a pipe, a progress bar,
other processes loading every core, a large environment, another malloc layout), must write the same
checkpoint bytes every time on the portable CPU path.

On the native path the hashes are printed side by side for comparison, not asserted: there MKL and
ATen choose kernels (and MKL, without CNR, its work split) at run time, which is the class of cause the
portable path removes (docs/decisions/0001-portable-cpu-numerics.md).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT, flywheel, scaled_recipe

pytestmark = pytest.mark.slow

SHIPPED = ROOT / "configs" / "tiny-arith.yaml"
SIZES = {"run.iterations": 1, "prompts.source.train_size_per_steps": 20, "prompts.source.probe_size": 8,
         "prompts.source.test_size": 16, "warmup.max_steps": 12}


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _run_warmup(ws: Path, env: dict[str, str], terminal: bool) -> str:
    """The warm-up in a fresh stage process; stderr a pseudo-terminal (as under `make run`) or a pipe."""
    import shutil

    from tasks.workspace.layout import Layout

    layout = Layout(ws)
    shutil.rmtree(layout.model("0000"), ignore_errors=True)
    out = ws / ".state-result.pkl"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "tasks.placement.stage_process", str(ws), "warmup", "", str(out)]
    if terminal:
        master, slave = os.openpty()
        drain = threading.Thread(target=lambda: _drain(master), daemon=True)
        drain.start()
        proc = subprocess.run(cmd, env=env, stdout=slave, stderr=slave, cwd=ROOT)
        os.close(slave)
    else:
        proc = subprocess.run(cmd, env=env, capture_output=True, cwd=ROOT)
    ok, payload, _ = pickle.loads(out.read_bytes())
    assert proc.returncode == 0 and ok, payload
    return _hash_dir(layout.model("0000"))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def _hash_dir(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("bits")
    recipe = scaled_recipe(SHIPPED, SIZES, base / "recipe.yaml")
    ws = base / "ws"
    flywheel("init", str(ws), "--config", str(recipe))
    flywheel("stage", "prepare", "--workspace", str(ws))
    flywheel("stage", "base", "--workspace", str(ws))
    return ws


CONDITIONS = {
    "pipe": ({}, False),
    "terminal": ({}, True),
    "progress bars": ({"FLYWHEEL_PROGRESS": "1"}, False),
    "large environment": ({"FLYWHEEL_PADDING": "x" * 100_000}, False),
    "other malloc layout": ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4096:glibc.malloc.top_pad=12345"}, False),
    "every core loaded": ({}, False),
}


def _hashes(ws: Path, path: str) -> dict[str, str]:
    import yaml

    from tasks.config.loading import load_recipe
    from tasks.numerics.state import process_env
    from tasks.workspace.layout import Layout

    recipe_file = Layout(ws).recipe  # the stage reads its path from the workspace's recipe
    data = yaml.safe_load(recipe_file.read_text())
    data["numerics"]["cpu_path"] = path
    recipe_file.write_text(yaml.safe_dump(data))
    numerics = load_recipe(recipe_file).numerics
    out = {}
    for name, (extra, terminal) in CONDITIONS.items():
        env = {**process_env(numerics), **extra}
        load = _busy(os.cpu_count() or 2) if name == "every core loaded" else []
        try:
            out[name] = _run_warmup(ws, env, terminal)
        finally:
            for p in load:
                p.kill()
                p.wait()
    return out


def test_the_portable_path_writes_the_same_checkpoint_under_every_condition(workspace):
    portable = _hashes(workspace, "portable")
    native = _hashes(workspace, "native")
    for name in CONDITIONS:
        print(f"{name:<22} portable {portable[name][:12]}  native {native[name][:12]}")
    assert len(set(portable.values())) == 1, portable
    # the two paths are different kernels: equal hashes would mean the portable settings never took effect
    assert set(portable.values()) != set(native.values())
