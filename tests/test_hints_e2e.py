"""The hint pass through the real CLI on the micro recipe: hinted rows with their origins in samples,
scored and selected; selected hinted samples trained on the plain question; the tail keys in metrics.json;
and generate re-run by DVC writes the recorded bytes again."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest
import yaml

from tests.conftest import dvc, flywheel, write_recipe


@pytest.fixture(scope="module")
def hinted_workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("hints-e2e")
    # the untrained micro model solves nothing, so every pool prompt is hinted; a threshold below every
    # score and a cap of 4 let hinted samples into the selected table beside first-pass ones
    recipe = write_recipe(base / "micro.yaml", {"hints": {"enabled": True, "kinds": ["partial", "answer"], "k": 2},
                                                "select.threshold": -1.0, "select.cap_per_prompt": 4})
    ws = base / "ws"
    flywheel("run", "--workspace", str(ws), "--config", str(recipe), "--iterations", "1")
    return ws


def _it(ws, name):
    return ws / "data" / "iterations" / "0001" / name


def test_hinted_rows_carry_their_origin_through_samples_scored_and_selected(hinted_workspace):
    ws = hinted_workspace
    samples, scored = pl.read_parquet(_it(ws, "samples.parquet")), pl.read_parquet(_it(ws, "scored.parquet"))
    for table in (samples, scored):
        assert set(table["origin"]) == {"self", "hinted"}  # partial first; every micro pool prompt has 2-3 steps
        assert (table.filter(pl.col("origin") == "hinted")["sample_idx"] >= 1000).all()
    hinted = scored.filter(pl.col("origin") == "hinted")
    assert (hinted["text"].str.starts_with(hinted["hint"])).all()  # prefill: the revealed steps start the sample
    selected = pl.read_parquet(_it(ws, "selected.parquet"))
    assert set(selected["origin"]) == {"self", "hinted"}


def test_selected_hinted_samples_have_the_plain_question_as_user_turn(hinted_workspace):
    ws = hinted_workspace
    prompts = pl.read_parquet(ws / "data" / "prompts" / "prompts.parquet").select("prompt_id", question="text")
    hints = pl.read_parquet(_it(ws, "scored.parquet")).select("prompt_id", "sample_idx", "hint")
    selected = (pl.read_parquet(_it(ws, "selected.parquet")).filter(pl.col("origin") == "hinted")
                .join(prompts, on="prompt_id").join(hints, on=["prompt_id", "sample_idx"]))
    assert selected.height
    user = selected["messages"].list.first().struct.field("content")
    assistant = selected["messages"].list.last().struct.field("content")
    assert user.equals(selected["question"], check_names=False)
    assert not (user.str.contains(selected["hint"], literal=True)).any()
    assert (assistant.str.starts_with(selected["hint"])).all()


def test_metrics_report_the_tail_by_origin(hinted_workspace):
    metrics = json.loads(_it(hinted_workspace, "metrics.json").read_text())
    samples = pl.read_parquet(_it(hinted_workspace, "samples.parquet"))
    assert metrics["n_samples"] == samples.filter(pl.col("origin") == "self").height  # exploration: first pass
    assert metrics["n_samples_hinted"] == samples.filter(pl.col("origin") == "hinted").height
    assert metrics["hint_prompts"] == samples.filter(pl.col("origin") != "self")["prompt_id"].n_unique()
    assert {"hint_rescued", "selected_self", "selected_hinted", "solved_d2_any"} <= set(metrics)
    gate = json.loads(_it(hinted_workspace, "gate.json").read_text())
    assert gate["passed"]


def test_generate_rerun_writes_the_recorded_bytes(hinted_workspace):
    ws = hinted_workspace
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["generate@0001"]
    recorded = next(o["md5"] for o in lock["outs"] if o["path"].endswith("samples.parquet"))
    assert {"hints", "verifier"} <= set(next(iter(lock["params"].values())))
    assert hashlib.md5(_it(ws, "samples.parquet").read_bytes()).hexdigest() == recorded
    dvc(ws, "repro", "-f", "-s", "generate@0001")
    assert hashlib.md5(_it(ws, "samples.parquet").read_bytes()).hexdigest() == recorded
    assert "changed" not in dvc(ws, "status", "generate@0001")


def test_the_cost_report_times_the_hint_pass(hinted_workspace):
    record = json.loads((hinted_workspace / "records" / "0001.json").read_text())
    gen = record["cost"]["stages"]["generate"]
    samples = pl.read_parquet(_it(hinted_workspace, "samples.parquet"))
    assert gen["hint_samples"] == samples.filter(pl.col("origin") != "self").height
    assert gen["hint_prompts"] == samples.filter(pl.col("origin") != "self")["prompt_id"].n_unique()
    assert 0 <= gen["hint_pass_s"] <= gen["wall_s"] and 0 <= gen["first_pass_s"] <= gen["wall_s"]
