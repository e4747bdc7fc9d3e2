"""tasks/config/loading.py: a hostile recipe is refused in bounded time and memory, in one line.

Each recipe is loaded in a child process held to 1 GiB of address space and a timeout, so a regression
fails here instead of taking the machine: before this check, the alias bombs grew to 3-4 GiB and ran for
minutes inside the error formatting."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tasks.config.loading import MAX_RECIPE_BYTES, load_recipe, parse_recipe_text, recipe_from_dict, recipe_to_yaml
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
MEMORY_CAP = 1 << 30  # address space of each child
WALL_LIMIT_S = 15.0  # interpreter start and imports included, on a loaded 2-core machine
PEAK_RSS_LIMIT_MIB = 300


def bomb(leaf: str, levels: int = 9, width: int = 9) -> str:
    """Billion laughs: `levels` nested anchors, each aliasing the one before `width` times (9^9 leaves)."""
    text = f"&a0 [{', '.join([leaf] * width)}]"
    for k in range(1, levels):
        text = f"&a{k} [{text}, {', '.join([f'*a{k - 1}'] * (width - 1))}]"
    return text


HOSTILE = {
    "alias bomb in calibrate.temperatures": ("calibrate:\n  enabled: true\n  temperatures: " + bomb("0.5") + "\n",
                                             ["line 3", "alias"]),
    "alias bomb in run.name": ("run:\n  name: " + bomb('"lol"') + "\n", ["line 2", "alias"]),
    "alias bomb in dispatch.train.job_variables": (
        "dispatch:\n  train:\n    job_variables:\n      env: " + bomb('"lol"') + "\n", ["line 4", "alias"]),
    "merge-key alias": ("base: &b {k: 4}\ngenerate:\n  <<: *b\n", ["line 3", "alias"]),
    "50 MB run.name": ("run:\n  name: " + "a" * (50 << 20) + "\n", ["50.0 MiB", "at most 1 MiB"]),
    "1 MiB and a byte": ("# " + "x" * MAX_RECIPE_BYTES + "\n", ["at most 1 MiB"]),
    "two generate sections": ("generate:\n  batch_size: 100\nrun:\n  name: x\ngenerate:\n  k: 4\n",
                              ["line 5", "'generate' appears twice", "lines 1 and 5"]),
    "a key twice in a section": ("generate:\n  k: 4\n  top_p: 0.9\n  k: 8\n", ["line 4", "'k'", "lines 2 and 4"]),
    "nesting 100,000 deep": ("run:\n  name: " + "[" * 100_000 + "]" * 100_000 + "\n", ["line 2", "nest"]),
    "nesting 200 deep": ("run:\n  name: " + "[" * 200 + "]" * 200 + "\n", ["line 2", "more than 32 levels"]),
    "an integer of 100,000 digits": ("generate:\n  k: " + "9" * 100_000 + "\n", ["line 2", "100,000 digits"]),
    "a 900 KB key": ("generate:\n  ? " + "k" * 900_000 + "\n  : 1\n", ["generate.kkkk", "…", "unknown key"]),
    "a 900 KB run.name": ("run:\n  name: " + "a" * 900_000 + "\n", ["run.name", "a str of 900,000 characters"]),
    "a 900 KB job variable": ("dispatch:\n  train:\n    job_variables:\n      env: " + "x" * 900_000 + "\n",
                              ["dispatch.train.job_variables", "16,384 characters"]),
}

CHILD = """
import sys
from tasks.config.loading import load_recipe
try:
    load_recipe(sys.argv[1])
except Exception as err:
    sys.stdout.write(f"{type(err).__name__}\\t{err}")
    sys.exit(2)
sys.stdout.write("accepted")
"""


# Runs `python -c CODE ...` or `python -m MODULE ...` and, at exit, writes the child's own peak RSS
# (VmHWM: the high-water mark of its memory after exec) to a file. The kernel's ru_maxrss cannot be
# used: a child's count starts from its parent's at fork, and a test worker that has loaded torch is
# far above the budget already.
HWM_WRAPPER = """
import atexit, runpy, sys
out = sys.argv[1]
def report():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(kib)
atexit.register(report)
mode, target, *rest = sys.argv[2:]
if mode == "-c":
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def run_capped(argv: list[str], cwd: Path, timeout: float = 120.0) -> tuple[int, str, str, float, float]:
    """(exit code, stdout, stderr, wall seconds, peak RSS in MiB) of a child held to MEMORY_CAP; killed at
    `timeout`, exit code -9 then. `argv` is `[python, "-c" or "-m", target, args...]`; a child that died
    before reporting its peak counts as having reached the cap."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    python, mode, target, *rest = argv
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as scratch:
        hwm = Path(scratch) / "hwm"
        start = time.perf_counter()
        proc = subprocess.Popen([python, "-c", HWM_WRAPPER, str(hwm), mode, target, *rest], cwd=cwd, stdout=out,
                                stderr=err, preexec_fn=cap, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wall = time.perf_counter() - start
        peak = int(hwm.read_text()) / 1024 if hwm.is_file() else MEMORY_CAP / 2**20
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                wall, peak)


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    files = {}
    for i, (name, (text, _)) in enumerate(HOSTILE.items()):
        files[name] = folder / f"recipe-{i}.yaml"
        files[name].write_text(text, encoding="utf-8")
    return files


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_recipe_refused_in_bounded_time_and_memory(name, hostile_files, tmp_path):
    path = hostile_files[name]
    code, out, err, wall, peak = run_capped([sys.executable, "-c", CHILD, str(path)], tmp_path)
    assert code == 2, (code, out[-500:], err[-2000:])
    kind, _, msg = out.partition("\t")
    assert kind == "ConfigError", out[-500:]
    assert "\n" not in msg and len(msg) < 600, msg[:1000]
    assert msg.startswith(f"{path}: ") and "Fix:" in msg, msg
    for needle in HOSTILE[name][1]:
        assert needle in msg, (needle, msg)
    assert wall < WALL_LIMIT_S, f"{name}: {wall:.1f} s"
    assert peak < PEAK_RSS_LIMIT_MIB, f"{name}: peak RSS {peak:.0f} MiB"


@pytest.mark.parametrize("name", ["alias bomb in run.name", "two generate sections", "50 MB run.name"])
def test_init_with_a_hostile_recipe_exits_2_and_creates_nothing(name, hostile_files, tmp_path):
    ws = tmp_path / "ws"
    code, out, err, wall, peak = run_capped(
        [sys.executable, "-m", "flywheel", "init", str(ws), "--config", str(hostile_files[name])], tmp_path)
    assert code == 2, (code, out[-500:], err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(hostile_files[name]) in lines[0] and "Fix:" in lines[0], err[-2000:]
    assert not ws.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no workspace, remote or git repo beside it
    assert wall < WALL_LIMIT_S + 10 and peak < PEAK_RSS_LIMIT_MIB + 200, (wall, peak)


# ---------------------------------------------------------------- data already parsed (bench scripts, tests)
def _expanded(leaf: str) -> object:
    """A billion-laughs value as plain yaml builds it: nine levels of shared lists, 9^9 leaves."""
    return yaml.safe_load("v: " + bomb(leaf))["v"]


@pytest.mark.parametrize("dotted, leaf, needles", [
    ("calibrate.temperatures", "0.5", ["calibrate.temperatures.0", "a list of 9 items"]),
    ("run.name", '"lol"', ["run.name", "a list of 9 items"]),
    ("dispatch.train.job_variables", '"lol"', ["dispatch.train.job_variables", "16,384 characters"]),
])
def test_an_expanded_bomb_handed_over_as_data_is_refused_quickly(dotted, leaf, needles):
    value = _expanded(leaf)
    if dotted.endswith("job_variables"):
        value = {"env": value}
    data: dict = {}
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    start = time.perf_counter()
    with pytest.raises(ConfigError) as exc:
        recipe_from_dict(data, "r.yaml")
    assert time.perf_counter() - start < 2.0
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 600, msg[:1000]
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_a_long_value_is_described_not_quoted():
    with pytest.raises(ConfigError) as exc:
        recipe_from_dict({"run": {"name": "a" * (50 << 20)}}, "r.yaml")
    msg = str(exc.value)
    assert "a str of 52,428,800 characters" in msg and len(msg) < 400


def test_a_short_value_is_still_quoted():
    with pytest.raises(ConfigError) as exc:
        recipe_from_dict({"run": {"name": "../evil"}}, "r.yaml")
    assert "(got '../evil')" in str(exc.value)


def test_a_long_url_with_credentials_is_neither_quoted_nor_searched_in_full():
    url = "https://user:s3cr3t@example.com/" + "p" * 200_000
    with pytest.raises(ConfigError) as exc:
        recipe_from_dict({"run": {"name": url}}, "r.yaml")
    assert "s3cr3t" not in str(exc.value)


# ---------------------------------------------------------------- what a recipe may still hold
def test_an_unused_anchor_and_a_key_repeated_in_different_sections_are_fine(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("generate: &g\n  k: 4\ntrain:\n  batch_size: 8\nwarmup:\n  batch_size: 8\n", encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.generate.k == 4 and recipe.train.batch_size == recipe.warmup.batch_size == 8


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_resolved_recipes_are_written_without_aliases_and_read_back(path):
    text = recipe_to_yaml(load_recipe(path))
    assert len(text.encode()) < MAX_RECIPE_BYTES // 16
    assert parse_recipe_text(text, "resolved") == yaml.safe_load(text)
