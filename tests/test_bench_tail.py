"""bench/tail_comparison.py on the micro recipe: one seed, one iteration; the JSON shape, the
equal-budget checks from the written tables, and the resume. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import MICRO_RECIPE, ROOT

SCRIPT = ROOT / "bench" / "tail_comparison.py"
# calibration on, on a small grid, so the bstar arm differs from star as in the shipped recipe
SETS = ["calibrate.enabled=true", "calibrate.temperatures=[0.8, 1.0]", "calibrate.k=2"]


def _bench(config, out, arms: str, *more: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--config", str(config), "--iterations", "1", "--seeds", "0",
           "--arms", arms, "--out", str(out), "--json", str(out / "tail.json"), *more]
    for s in SETS:
        cmd += ["--set", s]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def micro_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("tail") / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO_RECIPE))
    return path


@pytest.mark.slow
def test_star_and_bstar_arms_report_and_resume(micro_config, tmp_path):
    out = tmp_path / "tail"
    proc = _bench(micro_config, out, "star,bstar")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "tail.json").read_text())
    assert data["budget_problems"] == [] and data["arms"] == ["star", "bstar"]
    rows = data["seeds"]["0"]
    assert set(rows) == {"star", "bstar"} and all(len(r) == 2 for r in rows.values())
    for arm, (it0, it1) in rows.items():
        assert it0["iteration"] == 0 and it1["iteration"] == 1
        assert it0["pass@1"] == rows["star"][0]["pass@1"]  # one iteration-0 model for every arm
        if it1["trained"]:
            for key in ("pass@1", "pass@k", "distinct_ratio", "acc3", "acc4", "acc34", "acc34_sampled",
                        "pool_samples", "probe_samples", "train_steps", "seconds"):
                assert key in it1, (arm, key)
            assert it1["pool_samples"] == it1["pool_prompts"] * MICRO_RECIPE["generate"]["k"]
            assert it1["train_steps"] == MICRO_RECIPE["train"]["max_steps"]
    assert rows["star"][1]["probe_samples"] == 0 and rows["bstar"][1]["probe_samples"] == 8 * 2 * 2
    assert "goal (full - star" in proc.stdout and "not measured" in proc.stdout  # no full arm here
    assert "equal pool samples and training steps" in proc.stdout
    # a second call finds every iteration finished and only reads the tables back
    again = _bench(micro_config, out, "star,bstar")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "iteration 1:" not in again.stdout
    assert json.loads((out / "tail.json").read_text())["seeds"] == data["seeds"]


@pytest.mark.slow
def test_full_arm_spends_the_same_budget(micro_config, tmp_path):
    from bench import tail_comparison as tail

    try:
        tail.arm_recipe(MICRO_RECIPE, "full", {}, False)
    except SystemExit as exc:
        pytest.skip(f"the full arm cannot run with this code: {exc}")
    out = tmp_path / "tail"
    # 16 pool prompts x K 2 = 32 samples; k_min 1 leaves room for the hint pass's reserve
    proc = _bench(micro_config, out, "full", "--set", "allocation.k_min=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "tail.json").read_text())
    assert data["budget_problems"] == []
    it1 = data["seeds"]["0"]["full"][1]
    assert it1["pool_samples"] <= it1["pool_prompts"] * MICRO_RECIPE["generate"]["k"]
    assert "generate" in it1["stages_s"]
    assert any(k.startswith("n_samples_") for k in it1["tail"])  # the tail by origin is reported


def test_arm_recipes_and_a_missing_section_refused(monkeypatch):
    from bench import tail_comparison as tail

    star = tail.arm_recipe(MICRO_RECIPE, "star", {}, False)
    assert (star.calibrate.enabled, star.reward.source, star.generate.temperature, star.select.threshold) == (
        False, "none", 1.0, 0.0)
    bstar = tail.arm_recipe(MICRO_RECIPE, "bstar", {"calibrate": {"enabled": True}}, False)
    assert bstar.calibrate.enabled and tail.probe_samples(bstar) == 8 * 8 * 8
    charged = tail.arm_recipe(MICRO_RECIPE, "bstar", {"calibrate": {"enabled": True, "k": 1,
                                                                    "temperatures": [1.0]}}, True)
    assert charged.pool.prompts_per_iteration == (16 * 2 - 8) // 2  # 8 probe samples out of 32
    ablation = tail.arm_recipe(MICRO_RECIPE, "bstar+selected_avg", {"calibrate": {"enabled": True}}, False)
    assert ablation.calibrate.average_over == "selected"
    # the full arm either validates (hint pass and adaptive K in place) or is refused in one line
    try:
        full = tail.arm_recipe(MICRO_RECIPE, "full", {}, False)
    except SystemExit as exc:
        assert str(exc).startswith("arm full: ") and "\n" not in str(exc)
    else:
        assert full.hints.enabled and full.allocation.enabled
    monkeypatch.setitem(tail.NEEDS_SECTIONS, "full", ("hints", "no_such_section"))
    with pytest.raises(SystemExit, match="arm full: this code's recipe model has no no_such_section section"):
        tail.arm_recipe(MICRO_RECIPE, "full", {}, False)
