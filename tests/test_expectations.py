"""tasks/metrics/expectations.py: the GX data gate passes clean tables and blocks each injected defect."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tasks.config.recipe import CheckConfig
from tasks.data.schema import MESSAGE, PAIRS, PROMPTS, SAMPLES, SCORED, SELECTED, conform, stable_ids
from tasks.metrics.expectations import validate_tables

K = 4


def clean_tables() -> tuple[dict[str, pl.DataFrame], dict, list[str]]:
    """3 train prompts x K distinct samples (half correct), their selected chat rows, 1 test prompt."""
    texts = [f"Mia has {i + 3} pens. Then gets 2 more. How many pens now?" for i in range(3)]
    texts.append("Tom has 5 coins. Then loses 2. How many coins now?")
    ids = stable_ids(pl.Series(texts)).to_list()
    prompts = conform(pl.DataFrame({
        "prompt_id": ids, "text": texts, "answer": ["5", "6", "7", "3"], "split": ["train"] * 3 + ["test"],
        "source": ["arith"] * 4, "difficulty": [1] * 4, "target": [None] * 4}), PROMPTS)
    samples = conform(pl.DataFrame([
        {"prompt_id": pid, "sample_idx": k, "iteration": "1", "text": f" {i + 3}+2={i + 5 + k // 2}." + " ok" * k,
         "n_tokens": 12 + k, "finish_reason": "length" if k == 3 else "stop", "temperature": 0.8, "seed": 7,
         "model_hash": "abc", "pass_name": "main"}
        for i, pid in enumerate(ids[:3]) for k in range(K)]), SAMPLES)
    scored = conform(samples.with_columns(
        correct=pl.col("sample_idx") < 2, reward=pl.lit(0.25), score=pl.lit(1.05),
        extracted_answer=pl.col("text").str.extract(r"=(\d+)")), SCORED)
    selected = conform(scored.filter("correct").join(prompts.select("prompt_id", q="text"), on="prompt_id").select(
        "prompt_id", "sample_idx", "score", pl.lit("self").alias("origin"),
        messages=pl.concat_list(pl.struct(role=pl.lit("user"), content="q"),
                                pl.struct(role=pl.lit("assistant"), content="text")).cast(pl.List(MESSAGE))),
        SELECTED)
    metrics = {"coverage": 1.0, "distinct_correct_ratio": 1.0, "balance_score": 0.25, "repetition_rate": 0.0,
               "truncation_rate": 0.25, "n_selected": selected.height, "pass@1": 0.5, "n_prompts": 3,
               "n_samples": 12, "pass@4": 1.0, "histogram": [0, 0, 3, 0, 0]}
    tables = {"prompts": prompts, "samples": samples, "scored": scored, "selected": selected}
    return tables, metrics, [ids[3]]


@pytest.fixture
def clean():
    return clean_tables()


def run(tables: dict, metrics: dict | None, test_ids: list[str], **cfg) -> dict:
    return validate_tables(tables=tables, metrics=metrics, test_prompt_ids=test_ids, cfg=CheckConfig(**cfg))


def failing(result: dict, prefix: str) -> list[str]:
    assert result["passed"] is False
    return [f for f in result["failures"] if f.startswith(prefix)]


def has(result: dict, prefix: str, *words: str) -> None:
    lines = failing(result, prefix)
    assert any(all(w in line for w in words) for line in lines), (prefix, words, result["failures"])


def test_clean_tables_pass_and_write_data_docs(clean, tmp_path):
    tables, metrics, test_ids = clean
    out = validate_tables(tables=tables, metrics=metrics, test_prompt_ids=test_ids, cfg=CheckConfig(),
                          docs_dir=tmp_path / "data_docs")
    assert out["passed"] and out["failures"] == [], out["failures"]
    assert set(out["suites"]) == {f"{t}.{k}" for t in tables for k in ("schema", "rows", "aggregate")} | {"metrics"}
    assert all(s["success"] and s["evaluated"] > 0 for s in out["suites"].values())
    assert out["data_docs"] == "data_docs/index.html"
    index = tmp_path / out["data_docs"]
    assert index.is_file() and "scored.aggregate" in index.read_text()
    assert list((tmp_path / "data_docs" / "validations").rglob("*.html"))
    summary = (tmp_path / "data_docs" / "summary.html").read_text()
    assert "Data gate PASSED" in summary and 'href="validations/scored/aggregate/' in summary
    assert json.loads(json.dumps(out)) == out
    # rebuilding replaces the folder; data_docs off writes nothing
    again = validate_tables(tables={"selected": tables["selected"]}, metrics=None, test_prompt_ids=test_ids,
                            cfg=CheckConfig(data_docs=False), docs_dir=tmp_path / "off")
    assert again["passed"] and again["data_docs"] is None and not (tmp_path / "off").exists()


def test_collapse_is_blocked(clean):
    tables, metrics, test_ids = clean
    same = pl.lit(" 3+2=5.")
    tables["samples"] = tables["samples"].with_columns(text=same)
    tables["scored"] = tables["scored"].with_columns(text=same)
    out = run(tables, metrics | {"distinct_correct_ratio": 0.17}, test_ids, min_distinct_correct_ratio=0.6)
    has(out, "samples:", "duplicate_rate 1 > max_duplicate_rate 0.95")
    has(out, "scored:", "duplicate_rate 1 > max_duplicate_rate 0.95")
    # 2 identical correct texts per prompt: 3 distinct (prompt, text) pairs out of 6 correct
    has(out, "scored:", "distinct_correct_ratio 0.5 < min_distinct_correct_ratio 0.6")
    has(out, "metrics:", "distinct_correct_ratio 0.17 < min_distinct_correct_ratio 0.6")


def test_zero_correct_is_blocked(clean):
    tables, metrics, test_ids = clean
    tables["scored"] = tables["scored"].with_columns(correct=pl.lit(False))
    out = run({"scored": tables["scored"]}, metrics | {"coverage": 0.0, "pass@1": 0.0}, test_ids)
    has(out, "scored:", "coverage 0 < min_coverage 0.01")
    has(out, "metrics:", "coverage 0 < min_coverage 0.01")


def test_leakage_into_selected_and_samples_is_blocked(clean):
    tables, metrics, test_ids = clean
    leak = pl.when(pl.col("sample_idx") == 0).then(pl.lit(test_ids[0])).otherwise("prompt_id")
    tables["selected"] = tables["selected"].with_columns(prompt_id=leak)
    tables["samples"] = tables["samples"].with_columns(prompt_id=leak)
    out = run(tables, metrics, test_ids)
    has(out, "selected:", "3 row(s)", "leakage", test_ids[0])
    has(out, "samples:", "3 row(s)", "leakage", test_ids[0])
    assert not failing(out, "scored:")


def test_leakage_through_prompts_split_and_given_ids(clean):
    tables, metrics, _ = clean
    train_id = tables["prompts"].filter(pl.col("split") == "train")["prompt_id"][0]
    # the prompts table's own test split counts as held out even when no ids are passed
    moved = tables["prompts"].with_columns(split=pl.when(pl.col("split") == "test").then(pl.lit("train"))
                                           .otherwise("split"))
    assert run({"prompts": moved}, None, [])["passed"]
    out = run({"prompts": tables["prompts"], "scored": tables["scored"]}, None, [train_id])
    has(out, "prompts:", "1 non-test prompt(s)", "leakage", train_id)
    has(out, "scored:", f"{K} row(s)", "leakage", train_id)


def test_mass_truncation_is_blocked(clean):
    tables, metrics, test_ids = clean
    for name in ("samples", "scored"):
        tables[name] = tables[name].with_columns(finish_reason=pl.lit("length"))
    out = run(tables, metrics | {"truncation_rate": 0.97}, test_ids)
    has(out, "samples:", "truncation_rate 1 > max_truncation_rate 0.9")
    has(out, "scored:", "truncation_rate 1 > max_truncation_rate 0.9")
    has(out, "metrics:", "truncation_rate 0.97 > max_truncation_rate 0.9")


def test_null_ids_are_blocked(clean):
    tables, metrics, test_ids = clean
    tables["samples"] = tables["samples"].with_columns(
        prompt_id=pl.when(pl.col("sample_idx") == 1).then(None).otherwise("prompt_id"))
    tables["scored"] = tables["scored"].with_columns(
        sample_idx=pl.when(pl.col("sample_idx") == 2).then(None).otherwise("sample_idx"))
    out = run(tables, metrics, test_ids)
    has(out, "samples:", "prompt_id has 3 null value(s)")
    has(out, "scored:", "sample_idx has 3 null value(s)")


def test_wrong_types_are_blocked(clean):
    tables, metrics, test_ids = clean
    tables["samples"] = tables["samples"].with_columns(pl.col("sample_idx").cast(pl.String))
    tables["scored"] = tables["scored"].with_columns(pl.col("score").cast(pl.String))
    out = run(tables, metrics | {"pass@1": "0.5"}, test_ids)
    has(out, "samples:", "wrong dtype", "sample_idx is String (expected Int32)")
    has(out, "scored:", "wrong dtype", "score is String (expected Float64)")
    has(out, "metrics:", "pass@1 has type str, expected a number")
    # checks on a mistyped column are left out rather than erroring
    assert not any("could not run" in f for f in out["failures"]), out["failures"]


def test_duplicate_keys_are_blocked(clean):
    tables, metrics, test_ids = clean
    for name in ("scored", "selected", "prompts"):
        tables[name] = pl.concat([tables[name], tables[name].head(1)])
    out = run(tables, metrics, test_ids)
    has(out, "scored:", "duplicate key (prompt_id, sample_idx): 2 row(s)")
    has(out, "selected:", "duplicate key (origin, prompt_id, sample_idx): 2 row(s)")
    has(out, "prompts:", "prompt_id is not unique")


def test_empty_selected_is_blocked(clean):
    tables, metrics, test_ids = clean
    out = run({"selected": tables["selected"].clear()}, metrics | {"n_selected": 0}, test_ids)
    has(out, "selected:", "n_rows 0 < min_selected 1")
    has(out, "metrics:", "n_selected 0 < min_selected 1")
    assert run({"selected": tables["selected"].clear()}, None, test_ids, min_selected=0)["passed"]


def test_row_values_messages_and_metrics_shape(clean):
    tables, metrics, test_ids = clean
    tables["scored"] = tables["scored"].with_columns(
        finish_reason=pl.when(pl.col("sample_idx") == 0).then(pl.lit("eos")).otherwise("finish_reason"),
        reward=pl.when(pl.col("sample_idx") == 1).then(pl.lit(1.5)).otherwise("reward"),
        score=pl.when(pl.col("sample_idx") == 2).then(float("inf")).otherwise("score"),
        extracted_answer=pl.lit(None, pl.String), text=pl.lit("x" * 50))
    def chat(answer: str) -> pl.Expr:
        return pl.concat_list(pl.struct(role=pl.lit("user"), content=pl.lit("q")),
                              pl.struct(role=pl.lit("assistant"), content=pl.lit(answer))).cast(pl.List(MESSAGE))

    row = pl.int_range(pl.len())
    tables["selected"] = tables["selected"].with_columns(
        messages=pl.when(row == 0).then(chat("  ")).when(row == 1).then(chat("y" * 50)).otherwise("messages"))
    bad_metrics = {k: v for k, v in metrics.items() if k != "balance_score"} | {"coverage": float("nan")}
    out = run({"scored": tables["scored"], "selected": tables["selected"]}, bad_metrics, test_ids,
              min_text_chars=1, max_text_chars=40, max_missing_answer_rate=0.5)
    has(out, "scored:", "finish_reason has 3 value(s) not in ['length', 'stop']", "eos")
    has(out, "scored:", "reward has 3 value(s) outside [-1, 1]")
    has(out, "scored:", "score has 3 non-finite value(s), e.g. [inf")
    has(out, "scored:", "text has 12 value(s) with length outside [1, 40]")
    has(out, "scored:", "missing_answer_rate 1 > max_missing_answer_rate 0.5")
    has(out, "selected:", "1 row(s) lack a non-empty user and assistant turn")
    has(out, "selected:", "1 row(s) with an assistant turn outside [1, 40] chars")
    has(out, "metrics:", "missing key(s) ['balance_score']")
    has(out, "metrics:", "coverage has 1 null value(s)")


def test_missing_column_and_unknown_table(clean):
    tables, _, test_ids = clean
    out = run({"samples": tables["samples"].drop("finish_reason", "text")}, None, test_ids)
    has(out, "samples:", "missing column(s) ['finish_reason', 'text']")
    assert not any("could not run" in f for f in out["failures"]), out["failures"]
    with pytest.raises(ValueError, match="calibration"):
        run({"calibration": pl.DataFrame()}, None, test_ids)


def test_pseudo_label_coverage_and_agreement_are_gated_only_when_voting(clean):
    tables, metrics, test_ids = clean
    vote = {"pseudo_label_coverage": 0.2, "pseudo_label_agreement": 0.55, "pseudo_label_accuracy": None}
    strict = {"min_pseudo_label_coverage": 0.5, "min_pseudo_label_agreement": 0.7}
    out = run({"selected": tables["selected"]}, metrics | vote, test_ids, **strict)
    has(out, "metrics:", "pseudo_label_coverage 0.2 < min_pseudo_label_coverage 0.5")
    has(out, "metrics:", "pseudo_label_agreement 0.55 < min_pseudo_label_agreement 0.7")
    assert run({"selected": tables["selected"]}, metrics | vote, test_ids)["passed"]
    # a labelled iteration has no vote metrics: the bounds do not apply, and no key is required
    assert run({"selected": tables["selected"]}, metrics, test_ids, **strict)["passed"]


def pairs_frame(rows: list[tuple[str, str, str, float]], prompt_id: str) -> pl.DataFrame:
    return conform(pl.DataFrame({
        "prompt_id": [prompt_id] * len(rows), "prompt": [r[0] for r in rows], "chosen": [r[1] for r in rows],
        "rejected": [r[2] for r in rows], "chosen_idx": list(range(len(rows))),
        "rejected_idx": list(range(10, 10 + len(rows))), "margin": [r[3] for r in rows]}), PAIRS)


def test_pairs_suite_blocks_equal_empty_and_low_margin_pairs(clean):
    tables, metrics, test_ids = clean
    pid = tables["scored"]["prompt_id"][0]
    good = pairs_frame([("q", " 3+2=5. Answer: 5", " 3+2=6. Answer: 6", 1.0)], pid)
    assert run({"pairs": good}, None, test_ids)["passed"]
    bad = pairs_frame([("q", "same", "same", 1.0), ("q", " ", "x", 1.0), ("q", "a", "b", 0.1)], pid)
    out = validate_tables(tables={"pairs": bad}, metrics=None, test_prompt_ids=test_ids, cfg=CheckConfig(),
                          min_margin=0.5)
    has(out, "pairs:", "1 pair(s) whose chosen text equals the rejected one")
    has(out, "pairs:", "1 pair(s) with an empty prompt, chosen or rejected text")
    has(out, "pairs:", "1 pair(s) with a margin below select.pairs.min_margin 0.5")
    leaked = pairs_frame([("q", "a", "b", 1.0)], test_ids[0])
    has(run({"pairs": leaked}, None, test_ids), "pairs:", "held-out test prompts")
    has(run({"pairs": good.clear()}, None, test_ids), "pairs:", "n_rows 0 < min_selected 1")
    has(run({"pairs": good.clear()}, None, test_ids, min_selected=0), "pairs:", "n_rows 0 < min_selected 1")


def test_the_origin_expectation_comes_only_with_the_column():
    from tasks.metrics.expectation_suites import row_batch

    tables, _, _ = clean_tables()
    scored = tables["scored"]
    names = lambda b: [type(e).__name__ + ":" + str(getattr(e, "column", "")) for e in b.expectations]  # noqa: E731
    plain = row_batch(scored, SCORED, CheckConfig(), set(SCORED.columns))
    assert not any("origin" in n for n in names(plain)) and "origin" not in plain.frame.columns
    marked = scored.with_columns(origin=pl.lit("hinted"))
    batch = row_batch(marked, SCORED, CheckConfig(), set(SCORED.columns))
    assert "ExpectColumnValuesToBeInSet:origin" in names(batch) and "origin" in batch.frame.columns


def test_an_injected_reference_is_selected_as_sample_idx_minus_one(clean):
    tables, metrics, test_ids = clean
    sel = tables["selected"]
    ref = sel.head(1).with_columns(sample_idx=pl.lit(-1, pl.Int32), origin=pl.lit("reference"))
    assert run({**tables, "selected": pl.concat([sel, ref])}, metrics, test_ids)["passed"]
    own = sel.head(1).with_columns(sample_idx=pl.lit(-1, pl.Int32), origin=pl.lit("hinted"))
    has(run({**tables, "selected": pl.concat([sel, own])}, metrics, test_ids), "selected", "sample_idx")
