"""tasks/stages/select.py: threshold, dedup, cap and chat-message output of the select stage."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.config.recipe import SelectConfig
from tasks.data.schema import PAIRS, SCORED, SELECTED, conform
from tasks.stages.select import pairs_table, select, select_table

PROMPTS = pl.DataFrame({"prompt_id": ["p1", "p2"],
                        "text": ["Mia has 23 pens. Then gets 17 more. How many pens now?",
                                 "Tom has 5 coins. Then loses 2. How many coins now?"]})


def scored(rows: list[tuple[str, int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String,
                                      "score": pl.Float64}, orient="row")


def kept(out: pl.DataFrame) -> list[tuple[str, int]]:
    return sorted(zip(out["prompt_id"].to_list(), out["sample_idx"].to_list()))


def test_threshold_is_strictly_greater():
    df = scored([("p1", 0, "a", 0.5), ("p1", 1, "b", 0.51), ("p1", 2, "c", 0.49),
                 ("p2", 0, "d", 1.0), ("p2", 1, "e", -1.0)])
    out = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=10), threshold=0.5)
    assert kept(out) == [("p1", 1), ("p2", 0)]
    out = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=10), threshold=-1.0)
    assert kept(out) == [("p1", 0), ("p1", 1), ("p1", 2), ("p2", 0)]
    assert select_table(df, PROMPTS, SelectConfig(), threshold=1.0).height == 0


def test_exact_dedup_within_prompt_only():
    same = " 23+17=40. Answer: 40"
    df = scored([("p1", 0, same, 1.0), ("p1", 1, same, 1.0), ("p1", 2, same + " ", 1.0),
                 ("p2", 0, same, 1.0), ("p2", 3, same, 1.0)])
    out = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=10), threshold=0.5)
    # the same text twice counts once per prompt; another prompt keeps its own copy;
    # exact dedup is exact (a trailing space is a different text)
    assert kept(out) == [("p1", 0), ("p1", 2), ("p2", 0)]


def test_equation_dedup_ignores_wording_and_spacing():
    df = scored([
        ("p1", 0, " 23+17=40. Answer: 40", 1.0),
        ("p1", 1, " First 23 + 17 = 40, so Answer: 40", 1.0),
        ("p1", 2, " 23+17=40. so the Answer: 40", 1.0),
        ("p1", 3, " 17+23=40. Answer: 40", 1.0),
    ])
    exact = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=10), threshold=0.5)
    assert kept(exact) == [("p1", 0), ("p1", 1), ("p1", 2), ("p1", 3)]
    eq = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=10, dedup="equations"), threshold=0.5)
    assert kept(eq) == [("p1", 0), ("p1", 3)]


def test_cap_keeps_highest_score_then_lowest_sample_idx():
    df = scored([("p1", 4, "a", 0.9), ("p1", 1, "b", 0.7), ("p1", 2, "c", 0.9), ("p1", 0, "d", 0.8),
                 ("p2", 5, "e", 0.6), ("p2", 3, "f", 0.6)])
    out = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=1), threshold=0.5)
    assert kept(out) == [("p1", 2), ("p2", 3)]
    out = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=3), threshold=0.5)
    assert kept(out) == [("p1", 0), ("p1", 2), ("p1", 4), ("p2", 3), ("p2", 5)]


def test_dedup_keeps_the_best_copy():
    df = scored([("p1", 0, "same", 0.6), ("p1", 1, "same", 0.9), ("p1", 2, "same", 0.9)])
    out = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=5), threshold=0.5)
    assert kept(out) == [("p1", 1)]
    assert out["score"].to_list() == [0.9]


def test_messages_hold_question_and_assistant_text():
    df = scored([("p1", 0, " 23+17=40. Answer: 40\n\n  ", 1.0), ("p2", 0, " 5-2=3. Answer: 3", 0.8)])
    out = select_table(df, PROMPTS, SelectConfig(), threshold=0.5).sort("prompt_id")
    assert out["messages"].to_list() == [
        [{"role": "user", "content": PROMPTS["text"][0]},
         {"role": "assistant", "content": " 23+17=40. Answer: 40"}],  # trailing whitespace stripped only
        [{"role": "user", "content": PROMPTS["text"][1]},
         {"role": "assistant", "content": " 5-2=3. Answer: 3"}],
    ]
    assert out["origin"].to_list() == ["self", "self"]
    assert out["score"].to_list() == [1.0, 0.8]


def test_output_conforms_to_selected_schema():
    df = scored([("p2", 1, "x", 0.9), ("p1", 0, "y", 0.7), ("p1", 1, "z", 0.8)])
    out = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=2), threshold=0.0)
    table = conform(out, SELECTED)
    assert table.schema == SELECTED.schema
    assert kept(table) == [("p1", 0), ("p1", 1), ("p2", 1)]
    assert table["prompt_id"].to_list() == ["p1", "p1", "p2"]  # sorted by key


def test_nothing_above_threshold_gives_empty_conforming_table():
    df = scored([("p1", 0, "y", 0.1)])
    out = conform(select_table(df, PROMPTS, SelectConfig(), threshold=0.5), SELECTED)
    assert out.height == 0
    assert out.schema == SELECTED.schema


def test_select_stage_writes_parquet(tmp_path):
    full = scored([("p1", 0, "good", 0.9), ("p1", 1, "bad", 0.1), ("p2", 0, "ok", 0.6)]).with_columns(
        iteration=pl.lit("0001"), n_tokens=pl.lit(3, pl.Int32), finish_reason=pl.lit("stop"),
        temperature=pl.lit(0.8), seed=pl.lit(1, pl.Int64), model_hash=pl.lit("h"), pass_name=pl.lit("main"),
        correct=pl.col("score") > 0.5, reward=pl.col("score"), extracted_answer=pl.lit(None, pl.String))
    conform(full, SCORED).write_parquet(tmp_path / "scored.parquet")
    PROMPTS.write_parquet(tmp_path / "prompts.parquet")
    path = select(tmp_path / "scored.parquet", tmp_path / "prompts.parquet", SelectConfig(), 0.5,
                  tmp_path / "out" / "selected.parquet")
    out = pl.read_parquet(path)
    assert out.schema == SELECTED.schema
    assert kept(out) == [("p1", 0), ("p2", 0)]


@pytest.mark.parametrize("cap", [0, -1])
def test_cap_must_be_positive(cap):
    with pytest.raises(ValueError):
        SelectConfig(cap_per_prompt=cap)


def pair_rows(rows: list[tuple[str, int, str, bool, float, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String,
                                      "correct": pl.Boolean, "score": pl.Float64, "extracted_answer": pl.String},
                        orient="row")


def pairs_of(out: pl.DataFrame) -> list[tuple[str, int, int, float]]:
    return list(zip(out["prompt_id"], out["chosen_idx"], out["rejected_idx"], out["margin"]))


PAIR_SAMPLES = pair_rows([
    ("p1", 0, "23+17=40. Answer: 40", True, 1.1, "40"), ("p1", 1, "Answer: 41", False, 0.3, "41"),
    ("p1", 2, "23+17=40. Answer: 40", True, 1.0, "40"), ("p1", 3, "Answer: 39", False, -0.2, "39"),
    ("p1", 4, "23+17=40.  Answer: 40", True, 1.2, "40"),
    ("p2", 0, "Answer: 3", True, 1.0, "3"), ("p2", 1, "Answer: 3", True, 1.0, "3"),  # nothing to reject
])


def test_pairs_best_correct_against_worst_incorrect_with_cap_and_margin():
    cfg = SelectConfig(mode="pairs", pairs={"max_per_prompt": 3})
    out = pairs_table(PAIR_SAMPLES, PROMPTS, cfg, threshold=0.5)
    # chosen by score (4, 0, then 2 is a duplicate of 0's text); rejected worst first (3, then 1); at equal
    # rank sums the better chosen sample goes first
    assert pairs_of(out) == [("p1", 4, 3, 1.4), ("p1", 4, 1, 0.9), ("p1", 0, 3, 1.3)]
    assert out["prompt"].to_list() == [PROMPTS["text"][0]] * 3
    assert out["chosen"][0] == "23+17=40.  Answer: 40" and out["rejected"][0] == "Answer: 39"
    tight = SelectConfig(mode="pairs", pairs={"max_per_prompt": 3, "min_margin": 1.0})
    assert pairs_of(pairs_table(PAIR_SAMPLES, PROMPTS, tight, threshold=0.5)) == [("p1", 4, 3, 1.4), ("p1", 0, 3, 1.3)]
    assert pairs_of(pairs_table(PAIR_SAMPLES, PROMPTS, SelectConfig(mode="pairs"), threshold=0.5)) == [
        ("p1", 4, 3, 1.4)]
    # above the threshold only: a correct sample scoring 1.1 or less cannot be chosen at threshold 1.1
    assert pairs_of(pairs_table(PAIR_SAMPLES, PROMPTS, cfg, threshold=1.1)) == [("p1", 4, 3, 1.4), ("p1", 4, 1, 0.9)]


def test_vote_pairs_put_the_most_voted_answer_against_the_least_voted():
    df = pair_rows([("p1", 0, "Answer: 7", False, 0.0, "7"), ("p1", 1, "Answer: 5", False, 0.0, "5"),
                    ("p1", 2, "x Answer: 7", False, 0.0, "7"), ("p1", 3, "no answer", False, 0.0, None),
                    ("p1", 4, "y Answer: 5", False, 0.0, "5"), ("p1", 5, "z Answer: 7", False, 0.0, "7")])
    cfg = SelectConfig(mode="pairs", pairs={"strategy": "vote", "max_per_prompt": 2})
    out = pairs_table(df, PROMPTS, cfg, threshold=0.5)  # `correct` and the threshold play no part
    assert pairs_of(out) == [("p1", 0, 3, 0.5), ("p1", 0, 1, pytest.approx(1 / 6, abs=1e-9))]
    # a tie for most votes goes to the answer seen first (lowest sample_idx)
    tie = pair_rows([("p1", 0, "Answer: 2", False, 0.0, "2"), ("p1", 1, "Answer: 1", False, 0.0, "1")])
    assert pairs_of(pairs_table(tie, PROMPTS, cfg, threshold=0.5)) == [("p1", 0, 1, 0.0)]


def test_pairs_stage_writes_the_pairs_table(tmp_path):
    src = tmp_path / "scored.parquet"
    PAIR_SAMPLES.write_parquet(src)
    (tmp_path / "prompts.parquet").write_bytes(b"")
    PROMPTS.write_parquet(tmp_path / "prompts.parquet")
    out = select(src, tmp_path / "prompts.parquet", SelectConfig(mode="pairs"), 0.5, tmp_path / "selected.parquet")
    got = pl.read_parquet(out)
    assert got.schema == PAIRS.schema and got.height == 1
    assert (got["chosen"] != got["rejected"]).all()


# ---------------------------------------------------------------- B-STaR reference-code options
def test_reference_rows_selected_with_origin_reference():
    from tasks.stages.select import with_reference

    df = scored([("p1", 0, "a", 1.1), ("p1", 1, "b", 0.9), ("p2", 0, "c", 0.2)]).with_columns(correct=pl.lit(True))
    ref = pl.DataFrame({"prompt_id": ["p1", "p2", "p3"], "text": ["R1", "R2", "R3"]})
    assert with_reference(df, ref, 1.0)["prompt_id"].to_list().count("p3") == 0  # only prompts in the pool
    out = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=2), 0.5, reference=ref)
    assert sorted(zip(out["prompt_id"], out["sample_idx"], out["origin"])) == [
        ("p1", -1, "reference"), ("p1", 0, "self"), ("p2", -1, "reference")]
    conform(out, SELECTED)
    capped = select_table(df, PROMPTS, SelectConfig(cap_per_prompt=1), 0.5, reference=ref)
    assert sorted(zip(capped["prompt_id"], capped["origin"])) == [("p1", "self"), ("p2", "reference")]  # 1.1 > 1.0
    assert select_table(df, PROMPTS, SelectConfig(cap_per_prompt=2), 1.0, reference=ref)["origin"].to_list() == [
        "self"]  # the reference's 1.0 is not above a threshold of 1.0
    assert select_table(df, PROMPTS, SelectConfig(), 0.5)["origin"].unique().to_list() == ["self"]


def _select_workspace(tmp_path, threshold_from: str, *, declared: bool = True):
    """A workspace folder holding what the select stage reads: dvc.yaml, prompts, scored, choice."""
    import json
    import shutil

    from tasks.config.loading import recipe_from_dict
    from tasks.workspace.layout import Layout
    from tests.conftest import MICRO_RECIPE, ROOT

    L = Layout(tmp_path)
    if declared:
        shutil.copyfile(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    else:
        (tmp_path / "dvc.yaml").write_text("stages:\n  select:\n    outs:\n      - data/iterations/${key}/selected.parquet\n")
    L.prompts.parent.mkdir(parents=True)
    PROMPTS.with_columns(answer=pl.lit("1"), split=pl.lit("train"), source=pl.lit("arith"),
                         difficulty=pl.lit(1, pl.Int32), target=pl.lit(None, pl.String)).write_parquet(L.prompts)
    rows = [("p1", 0, "good", 1.15, True), ("p1", 1, "meh", 0.95, True), ("p1", 2, "bad", 0.3, False),
            ("p2", 0, "ok", 1.05, True), ("p2", 1, "wrong", 0.7, False)]
    full = pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String,
                                      "score": pl.Float64, "correct": pl.Boolean}, orient="row").with_columns(
        iteration=pl.lit("0001"), n_tokens=pl.lit(3, pl.Int32), finish_reason=pl.lit("stop"),
        temperature=pl.lit(0.8), seed=pl.lit(1, pl.Int64), model_hash=pl.lit("h"), pass_name=pl.lit("main"),
        reward=pl.lit(0.0), extracted_answer=pl.lit(None, pl.String))
    L.iter_dir("0001").mkdir(parents=True)
    conform(full, SCORED).write_parquet(L.scored("0001"))
    L.choice("0001").write_text(json.dumps({"temperature": 0.8, "threshold": 0.1, "balance_score": 0.4,
                                            "calibrated": True}))
    data = json.loads(json.dumps(MICRO_RECIPE))
    data["calibrate"] = {"enabled": True, "threshold_from": threshold_from, "n_star": 1}
    data["select"] = {"cap_per_prompt": 4}
    return L, recipe_from_dict(data)


def test_full_resweep_picks_and_records_threshold(tmp_path):
    import json

    from tasks.data.schema import CALIBRATION_OPTIONS
    from tasks.pipeline import _applied_choice, _select

    L, r = _select_workspace(tmp_path, "full")
    result = _select(L, r, "0001")
    applied = json.loads(L.threshold("0001").read_text())
    # n* = 1: any threshold in [0.7, 1.05) keeps only correct samples (bs 1 on both prompts); ties go
    # to the higher threshold, so 1.0, the top of the default grid
    assert applied == {"threshold": 1.0, "from": "full", "probe_threshold": 0.1, "balance_score": 1.0}
    grid = pl.read_parquet(L.calibration_full("0001"))
    assert grid.schema == CALIBRATION_OPTIONS.schema and grid["chosen"].sum() == 1
    assert grid.filter(pl.col("chosen"))["threshold"].to_list() == [1.0]
    assert grid["set"].unique().to_list() == ["full"] and grid["temperature"].unique().to_list() == [0.8]
    assert kept(pl.read_parquet(L.selected("0001"))) == [("p1", 0), ("p2", 0)]  # select applied it
    assert result["threshold"] == 1.0
    assert _applied_choice(L, "0001")["threshold"] == 1.0  # what check computes its metrics at
    assert _applied_choice(L, "0001")["probe_threshold"] == 0.1


def test_probe_threshold_when_resweep_off(tmp_path):
    import json

    from tasks.data.schema import CALIBRATION
    from tasks.pipeline import _applied_choice, _select

    L, r = _select_workspace(tmp_path, "probe")
    _select(L, r, "0001")
    assert json.loads(L.threshold("0001").read_text()) == {"threshold": 0.1, "from": "probe",
                                                           "probe_threshold": 0.1, "balance_score": 0.4}
    empty = pl.read_parquet(L.calibration_full("0001"))
    assert empty.height == 0 and empty.schema == CALIBRATION.schema
    assert kept(pl.read_parquet(L.selected("0001"))) == [("p1", 0), ("p1", 1), ("p1", 2), ("p2", 0), ("p2", 1)]
    assert _applied_choice(L, "0001") == json.loads(L.choice("0001").read_text())


def test_an_older_workspace_gets_no_undeclared_files(tmp_path):
    from tasks.pipeline import _select

    L, r = _select_workspace(tmp_path, "probe", declared=False)
    _select(L, r, "0001")
    assert L.selected("0001").is_file()
    assert not L.threshold("0001").exists() and not L.calibration_full("0001").exists()


def test_hinted_samples_train_without_the_hint():
    """STaR: a sample found with a hint is trained on the plain question; its origin is kept."""
    hint = "(The answer is 40.)"
    df = scored([("p1", 0, " 23+17=41. Answer: 41", 0.0), ("p1", 1000, " 23+17=40. Answer: 40", 1.0),
                 ("p2", 1001, " 5-2=3. Answer: 3", 1.1)]).with_columns(
        origin=pl.Series(["self", "rationalized", "hinted"]), hint=pl.Series([None, hint, " 5-2=3."]))
    out = select_table(df, PROMPTS, SelectConfig(), threshold=0.5).sort("prompt_id")
    users = [m[0]["content"] for m in out["messages"].to_list()]
    assert users == PROMPTS["text"].to_list()
    assert not any(hint in u for u in users)
    assert out["origin"].to_list() == ["rationalized", "hinted"]
    assert out["messages"].to_list()[1][1]["content"] == " 5-2=3. Answer: 3"  # the prefilled steps stay in the answer


def test_on_equal_scores_the_first_pass_sample_wins():
    df = scored([("p1", 1000, " 23+17=40. Answer: 40 ", 1.0), ("p1", 3, " 23+17=40. Answer: 40", 1.0)]).with_columns(
        origin=pl.Series(["hinted", "self"]))
    out = select_table(df, PROMPTS, SelectConfig(), threshold=0.5)
    assert out["origin"].to_list() == ["self"] and out["sample_idx"].to_list() == [3]


def test_origin_defaults_to_self_without_the_column():
    out = select_table(scored([("p1", 0, "x", 1.0)]), PROMPTS, SelectConfig(), threshold=0.5)
    assert out["origin"].to_list() == ["self"]
