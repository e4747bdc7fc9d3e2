"""Verifier `none`: a task with nothing to check samples against, where the policy's own 1-5 verdict
(reward source `judge`) is the score that select thresholds; malformed combinations are refused before
any compute, and the judge's replies are queryable as the `judged` SQL view."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from tasks.config.checks import check_recipe
from tasks.config.loading import recipe_from_dict
from tasks.config.recipe import RewardConfig, VerifierConfig
from tasks.errors import ConfigError
from tasks.stages.judge import add_judge_verdicts
from tasks.verify.verifiers import make_verifier
from tests.conftest import MICRO_RECIPE, flywheel

THRESHOLD, ACCEPT = 2.5, 4
JUDGE_ONLY = {"verifier.type": "none",
              # the micro model is all but untrained: its greedy reply is one repeated character, so the
              # judge samples (seeded, so still deterministic) and any digit 1-5 in the reply counts
              "reward": {"source": "judge", "judge": {"pattern": "([1-5])", "accept": ACCEPT, "temperature": 1.0,
                                                      "max_new_tokens": 6}},
              "select.threshold": THRESHOLD}


def recipe_data(overrides: dict) -> dict:
    data = json.loads(json.dumps(MICRO_RECIPE))
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


def refusal(overrides: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe_from_dict(recipe_data(overrides)))
    msg = str(exc.value)
    assert "\n" not in msg and "Fix:" in msg, msg
    return msg


# ---------------------------------------------------------------- units
def test_no_verifier_marks_nothing_correct_and_never_reads_gold():
    samples = pl.DataFrame({"prompt_id": ["p", "p"], "sample_idx": [0, 1], "text": [" 2+2=4. Answer: 4", "x"]},
                           schema_overrides={"sample_idx": pl.Int32})
    out = make_verifier("none").verify(samples, pl.DataFrame({"prompt_id": ["p"], "text": ["q"], "answer": ["4"]}))
    assert out["correct"].to_list() == [False, False] and out["extracted_answer"].to_list() == ["4", None]
    assert VerifierConfig(type="none").for_evaluation().type == "answer_match"  # held-out pass@1 against gold


def test_the_judge_score_is_the_score_and_accept_sets_correct():
    scored = pl.DataFrame({"prompt_id": ["p"] * 4, "sample_idx": [0, 1, 2, 3], "correct": [False] * 4,
                           "reward": [None] * 4, "score": [0.0] * 4},
                          schema_overrides={"sample_idx": pl.Int32, "reward": pl.Float64})
    judged = pl.DataFrame({"prompt_id": ["p"] * 4, "sample_idx": [3, 2, 1, 0], "judge_score": [None, 3, 4, 5]},
                          schema_overrides={"sample_idx": pl.Int32, "judge_score": pl.Int32})
    out = add_judge_verdicts(scored, judged, RewardConfig(source="judge", judge={"accept": 4}))
    assert out["sample_idx"].to_list() == [0, 1, 2, 3]  # the scored table's order, whatever the judged one's
    assert out["score"].to_list() == [5.0, 4.0, 3.0, 0.0]  # unparsable: 0, under every allowed threshold
    assert out["correct"].to_list() == [True, True, False, False]
    assert out["reward"].to_list() == [1.0, 0.5, 0.0, None]


# ---------------------------------------------------------------- refusals before any compute
def test_malformed_judge_only_recipes_name_the_field_and_the_fix():
    assert "verifier.type" in (msg := refusal({"verifier.type": "none"})) and "reward.source: judge" in msg
    msg = refusal({**JUDGE_ONLY, "calibrate.enabled": True})
    assert msg.startswith("calibrate.enabled:") and "calibrate.enabled: false" in msg
    for t, keeps in ((0.5, "every judged sample"), (5.0, "no sample")):
        msg = refusal({**JUDGE_ONLY, "select.threshold": t})
        assert msg.startswith("select.threshold:") and keeps in msg and "between 1 and 5" in msg
    check_recipe(recipe_from_dict(recipe_data(JUDGE_ONLY)))
    with pytest.raises(ConfigError, match="reward.judge.accept"):
        recipe_from_dict(recipe_data({**JUDGE_ONLY, "reward.judge.accept": 6}))


def test_run_refuses_a_recipe_with_no_verifier_and_no_judge(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe_data({"verifier.type": "none"})))
    proc = flywheel("run", "-w", str(tmp_path / "ws"), "-c", str(tmp_path / "r.yaml"), "-n", "1", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "verifier.type" in lines[0] and "reward.source: judge" in lines[0]
    assert not (tmp_path / "ws" / "data" / "iterations").exists()


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def judge_workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("judge-only")
    data = recipe_data({**JUDGE_ONLY, "run.iterations": 1, "select.cap_per_prompt": 1})
    (base / "r.yaml").write_text(yaml.safe_dump(data))
    ws = base / "ws"
    flywheel("run", "-w", str(ws), "-c", str(base / "r.yaml"), "-n", "1")
    return ws


@pytest.mark.slow  # about a minute: one micro iteration with a judge pass over every sample
def test_the_judge_alone_drives_selection(judge_workspace):
    it = judge_workspace / "data/iterations/0001"
    judged = pl.read_parquet(it / "judged.parquet")
    scored = pl.read_parquet(it / "scored.parquet")
    selected = pl.read_parquet(it / "selected.parquet")
    key = ["prompt_id", "sample_idx"]
    both = scored.join(judged.select(*key, "judge_score"), on=key, how="left")
    assert judged.height == scored.height == both.height
    # the score is the judge's verdict; correct is "rated at least accept"; gold played no part
    assert both["score"].to_list() == both["judge_score"].cast(pl.Float64).fill_null(0.0).to_list()
    assert both["correct"].to_list() == (both["judge_score"] >= ACCEPT).fill_null(False).to_list()
    s = both["judge_score"]
    assert (s > THRESHOLD).sum() > 0 and (s <= THRESHOLD).sum() > 0, "the micro judge gave no spread of scores"
    # select kept, per prompt, the best-rated sample above the threshold (cap 1), and nothing else
    want = (both.filter(pl.col("judge_score") > THRESHOLD)
            .sort(["prompt_id", "judge_score", "sample_idx"], descending=[False, True, False])
            .unique("prompt_id", keep="first").select(*key, "judge_score").sort(key))
    got = selected.select(*key, "score").sort(key)
    assert got.select(key).equals(want.select(key))
    assert got["score"].to_list() == want["judge_score"].cast(pl.Float64).to_list()
    # the pool metrics count the judge's accepts; the gate passed and the examples were trained on
    metrics = json.loads((it / "metrics.json").read_text())
    accepted = both.group_by("prompt_id").agg(pl.col("correct").any())["correct"].mean()
    assert metrics["coverage"] == pytest.approx(accepted)
    assert json.loads((it / "gate.json").read_text())["passed"]
    assert (judge_workspace / "models/0001").is_dir() and "pass@1" in json.loads((it / "eval.json").read_text())


@pytest.mark.slow
def test_judged_sql_view(judge_workspace):
    rows = json.loads(flywheel("sql", "SELECT iteration, count(*) AS n, count(judge_score) AS scored, "
                                      "min(judge_score) AS lo, max(judge_score) AS hi FROM judged GROUP BY ALL",
                               "-w", str(judge_workspace), "--json").stdout)
    judged = pl.read_parquet(judge_workspace / "data/iterations/0001/judged.parquet")
    s = judged["judge_score"]
    assert rows == [{"iteration": "0001", "n": judged.height, "scored": s.count(), "lo": s.min(), "hi": s.max()}]
    # every selected example's score is its judge verdict, joined in SQL
    bad = json.loads(flywheel("sql", f"SELECT count(*) AS n FROM selected se JOIN judged j USING (iteration, "
                                     f"prompt_id, sample_idx) WHERE j.judge_score <= {THRESHOLD} OR "
                                     "se.score <> j.judge_score", "-w", str(judge_workspace), "--json").stdout)
    assert bad == [{"n": 0}]


def test_judged_view_spans_iterations_with_the_judge_off_and_on(tmp_path):
    import duckdb

    from tasks.audit.sql import _parquet_views
    from tasks.data.schema import JUDGED, write_table

    off, on = (tmp_path / "data/iterations" / it / "judged.parquet" for it in ("0001", "0002"))
    for path in (off, on):
        path.parent.mkdir(parents=True)
    write_table(pl.DataFrame(schema=JUDGED.schema), off, JUDGED)  # what score writes with the judge off
    write_table(pl.DataFrame({"prompt_id": ["p", "p"], "sample_idx": [0, 1], "text": ["4", "?"],
                              "judge_score": [4, None], "n_tokens": [1, 1], "finish_reason": ["length"] * 2,
                              "seed": [7, 7], "model_hash": ["h", "h"]}), on, JUDGED)
    con = duckdb.connect()
    _parquet_views(con, tmp_path)
    assert con.sql("SELECT iteration, sample_idx, judge_score FROM judged ORDER BY ALL").fetchall() == [
        ("0002", 0, 4), ("0002", 1, None)]
