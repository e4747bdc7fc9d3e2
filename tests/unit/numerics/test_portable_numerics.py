"""The portable CPU path: the environment each stage process starts with, and what it changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasks.config.recipe import NumericsConfig
from tasks.numerics import portable
from tasks.numerics.state import check_path, process_env, stage_env
from tests.conftest import ROOT

PROBE = ("import json, torch, os; torch.manual_seed(0); a = torch.randn(64, 257); "
         "lin = torch.nn.Linear(257, 33); y = lin(a).softmax(-1).sum(0); "
         "print(json.dumps({'cap': torch.backends.cpu.get_cpu_capability(), 'cbwr': os.environ.get('MKL_CBWR'), "
         "'bits': y.detach().numpy().tobytes().hex()}))")


def _probe(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def test_a_stage_process_starts_on_the_path_its_workspace_names():
    portable_run = _probe(process_env(NumericsConfig(threads=2, cpu_path="portable")))
    native_run = _probe(process_env(NumericsConfig(threads=2, cpu_path="native"), base={"PATH": "/usr/bin"}))
    assert portable_run["cap"] == "AVX2" and portable_run["cbwr"] == "AVX2,STRICT"
    assert native_run["cbwr"] is None  # native removes the variables, whatever the caller's shell had
    assert process_env(NumericsConfig(cpu_path="native"), base={"MKL_CBWR": "AVX512"}).get("MKL_CBWR") is None


def test_an_unset_path_in_an_old_workspace_runs_natively_and_a_new_one_portably():
    assert stage_env(NumericsConfig())["ATEN_CPU_CAPABILITY"] is None  # recorded before the setting: native
    from tasks.numerics.state import resolve

    assert stage_env(resolve(NumericsConfig()))["ATEN_CPU_CAPABILITY"] == "avx2"


def test_the_portable_bits_do_not_depend_on_the_isa_this_cpu_offers():
    """Capping MKL's and oneDNN's instruction sets (what an older CPU offers) changes nothing on the
    portable path: the kernels are already the AVX2 ones."""
    env = process_env(NumericsConfig(threads=2, cpu_path="portable"))
    capped = _probe({**env, "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert capped["bits"] == _probe(env)["bits"]


def test_a_process_on_the_other_path_refuses_to_compute_a_stage():
    """The suite's own process is portable (tests/conftest.py); a workspace that says native cannot run
    its stages in it, and an old workspace (no setting) can."""
    with pytest.raises(Exception, match="numerics.cpu_path"):
        check_path(NumericsConfig(cpu_path="native"))
    check_path(NumericsConfig(cpu_path="portable"))
    check_path(NumericsConfig())


def test_gpu_determinism_reaches_the_engine_and_the_trainer(monkeypatch):
    env = process_env(NumericsConfig(threads=1, cpu_path="portable", gpu_deterministic=True))
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and env["VLLM_BATCH_INVARIANT"] == "1"
    assert "CUBLAS_WORKSPACE_CONFIG" not in process_env(NumericsConfig(threads=1, cpu_path="portable"),
                                                        base={"CUBLAS_WORKSPACE_CONFIG": ":16:8"})
    pytest.importorskip("vllm")
    read = subprocess.run([sys.executable, "-c", "import vllm.envs as e; print(e.VLLM_BATCH_INVARIANT)"],
                          env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    assert read.stdout.strip().splitlines()[-1] == "True"
    # the trainer: a GPU process whose torch flags `pin` set asks the Trainer for full determinism
    from tasks.config.recipe import TrainConfig
    from tasks.models import sft_setup

    monkeypatch.setattr(sft_setup, "on_gpu", lambda: True)
    monkeypatch.setattr(sft_setup, "torch_deterministic", lambda: True)
    args = sft_setup.sft_config(TrainConfig(max_steps=1), 0, "fp32", ROOT / ".no-such-dir", quiet=True)
    assert args.full_determinism is True
    monkeypatch.setattr(sft_setup, "on_gpu", lambda: False)
    assert sft_setup.sft_config(TrainConfig(max_steps=1), 0, "fp32", ROOT / ".x", quiet=True).full_determinism is False


def test_the_environment_table_is_all_or_nothing():
    assert portable.path_in_force(portable.CPU_PATH_ENV) == "portable"
    partial = {**portable.CPU_PATH_ENV, "MKL_CBWR": "AVX512"}
    assert portable.path_in_force(partial) == "native"
    with pytest.raises(ValueError):
        portable.cpu_path_env("avx9000")


def test_flywheel_stage_takes_its_workspaces_path_before_torch_loads(tmp_path):
    """Under `dvc repro` a stage runs inside `flywheel stage`, whose import put the process on the
    portable path; a native workspace's stage switches it back while torch is not loaded yet."""
    import yaml

    from tests.conftest import MICRO_RECIPE

    (tmp_path / "flywheel.yaml").write_text(yaml.safe_dump({**MICRO_RECIPE, "numerics": {"cpu_path": "native"}}))
    code = ("import flywheel, os, json; from pathlib import Path; from tasks.pipeline import run_stage; "
            "from tasks.workspace.layout import Layout; run_stage(Layout(Path(os.environ['WS'])), 'prepare'); "
            "import torch; from tasks.numerics.fingerprint import cpu; from tasks.numerics.state import native_capability; "
            "print(json.dumps([os.environ.get('MKL_CBWR'), torch.backends.cpu.get_cpu_capability(), "
            "native_capability(cpu()['flags'])]))")
    env = {k: v for k, v in os.environ.items() if k not in portable.CPU_PATH_ENV}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "WS": str(tmp_path)}, capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    cbwr, capability, native = json.loads(out.stdout.strip().splitlines()[-1])
    assert cbwr is None and capability == native
