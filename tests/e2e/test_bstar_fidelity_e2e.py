"""calibrate.fidelity through the real loop: the rules a workspace records at init, the probe samples
as a DVC output, the reference code's rules end to end, and the audit trail of a choice."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from tests.conftest import flywheel, write_recipe


def _recipe(ws) -> dict:
    return yaml.safe_load((ws / "flywheel.yaml").read_text())


def _lock_outs(ws, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"][stage]
    return {o["path"]: o.get("md5") for o in lock["outs"]}


def test_init_records_our_rules_and_float64_scores(micro_workspace):
    recipe = _recipe(micro_workspace)
    assert recipe["calibrate"]["fidelity"] == "ours"
    assert recipe["reward"]["arithmetic"] == "float64"
    # the probe table is a DVC output of calibrate, empty when calibration is off
    outs = _lock_outs(micro_workspace, "calibrate@0001")
    assert outs.get("data/iterations/0001/probe.parquet")
    assert pl.read_parquet(micro_workspace / "data/iterations/0001/probe.parquet").height == 0


@pytest.fixture(scope="module")
def reference_ws(tmp_path_factory):
    base = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(base / "micro.yaml", {"calibrate.enabled": True, "calibrate.fidelity": "reference",
                                                "calibrate.temperatures": [0.6, 1.0], "calibrate.k": 2,
                                                "select.cap_per_prompt": 2})
    ws = base / "ws"
    flywheel("run", "--workspace", str(ws), "--config", str(recipe), "--iterations", "1")
    return ws


def test_reference_rules_run_end_to_end(reference_ws):
    from tasks.config.fidelity import REFERENCE_GRID
    from tasks.verify.answers import normalise_number

    ws, it = reference_ws, reference_ws / "data/iterations/0001"
    recipe = _recipe(ws)
    assert recipe["calibrate"]["fidelity"] == "reference"
    assert recipe["reward"]["arithmetic"] == "reference"
    assert recipe["calibrate"]["average_over"] == "selected" and recipe["calibrate"]["inject_reference"] == "train"
    assert _lock_outs(ws, "calibrate@0001").get("data/iterations/0001/probe.parquet")
    # the probe grid runs over the reference's own thresholds, which never reach 1.0
    grid = pl.read_parquet(it / "calibration.parquet")
    for t in (0.6, 1.0):
        assert grid.filter(pl.col("temperature") == t)["threshold"].to_list() == REFERENCE_GRID
    # the probe samples are the reference's candidates: answered, and correct by final-answer match
    probe = pl.read_parquet(it / "probe.parquet")
    prompts = pl.read_parquet(ws / "data/prompts/prompts.parquet")
    gold = prompts.select("prompt_id", g=normalise_number(pl.col("answer")))
    checked = probe.join(gold, on="prompt_id", how="left")
    answered = checked.filter(pl.col("extracted_answer").is_not_null())
    assert (answered["correct"] == (answered["extracted_answer"] == answered["g"])).all()
    unanswered = checked.filter(pl.col("extracted_answer").is_null())
    assert (unanswered["score"] == float("-inf")).all() and not unanswered["correct"].any()
    # the threshold select applied was re-swept on the full set, and the reference solution is trainable
    applied = json.loads((it / "threshold.json").read_text())
    assert applied["from"] == "full"
    full = pl.read_parquet(it / "calibration_full.parquet")
    assert full["chosen"].sum() == 1 and set(full["set"]) == {"full"}
    assert (pl.read_parquet(it / "selected.parquet")["origin"] == "reference").any()
    out = flywheel("lineage", "1", "-w", str(ws)).stdout
    assert "reference rules" in out and "runners-up:" in out


def test_a_reference_recipe_that_contradicts_the_reference_is_refused(tmp_path):
    recipe = write_recipe(tmp_path / "bad.yaml", {"calibrate.enabled": True, "calibrate.fidelity": "reference",
                                                  "calibrate.average_over": "all"})
    proc = flywheel("init", str(tmp_path / "ws"), "--config", str(recipe), check=False, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "average_over" in err[0] and "fidelity" in err[0]
    assert not (tmp_path / "ws").exists()
