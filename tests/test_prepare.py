"""tasks/stages/prepare.py: building, ingesting and leak-checking the prompts table."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tasks.config.recipe import ArithSource, FileSource
from tasks.data.schema import PROMPTS, SPLITS, conform, stable_ids
from tasks.errors import InputDataError
from tasks.stages.prepare import build_arith_prompts, check_no_leakage, ingest_prompt_file

SMALL = ArithSource(seed_size=10, seed_mix=[0.45, 0.40, 0.10, 0.05], train_size_per_steps=7, probe_size=6,
                    test_size=9, max_steps=4)


@pytest.fixture(scope="module")
def arith_prompts() -> pl.DataFrame:
    return build_arith_prompts(SMALL, run_seed=0)


# ---------------------------------------------------------------- build_arith_prompts
def test_splits_are_disjoint_by_prompt_id(arith_prompts):
    assert arith_prompts["prompt_id"].is_unique().all()
    ids = {s: set(arith_prompts.filter(pl.col("split") == s)["prompt_id"]) for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not ids[a] & ids[b], (a, b)


def test_split_sizes_as_configured(arith_prompts):
    sizes = dict(arith_prompts.group_by("split").len().iter_rows())
    assert sizes == {"test": 9, "probe": 6, "seed": 10, "train": 7 * 4}
    per = {(s, d): n for s, d, n in arith_prompts.group_by("split", "difficulty").len().iter_rows()}
    assert [per.get(("train", d)) for d in (1, 2, 3, 4)] == [7, 7, 7, 7]
    assert [per.get(("test", d)) for d in (1, 2, 3, 4)] == [3, 2, 2, 2]  # remainder to the easy end
    assert [per.get(("probe", d)) for d in (1, 2, 3, 4)] == [2, 2, 1, 1]


@pytest.mark.parametrize("seed_size, mix", [(1000, [0.45, 0.40, 0.10, 0.05]), (10, [0.45, 0.40, 0.10, 0.05]),
                                            (7, [0.25, 0.25, 0.25, 0.25]), (3, [1 / 3, 1 / 3, 1 / 3, 0.0])])
def test_seed_split_sums_to_seed_size(seed_size, mix):
    src = ArithSource(seed_size=seed_size, seed_mix=mix, train_size_per_steps=1, probe_size=1, test_size=1)
    df = build_arith_prompts(src, run_seed=1)
    seed = df.filter(pl.col("split") == "seed")
    assert seed.height == seed_size
    counts = dict(seed.group_by("difficulty").len().iter_rows())
    for steps, share in zip((1, 2, 3, 4), mix):
        assert abs(counts.get(steps, 0) - seed_size * share) < 1  # each level within rounding


def test_only_seed_split_has_target(arith_prompts):
    seed = arith_prompts.filter(pl.col("split") == "seed")
    rest = arith_prompts.filter(pl.col("split") != "seed")
    assert seed["target"].null_count() == 0
    assert rest["target"].null_count() == rest.height
    assert all(t.endswith(f"Answer: {a}") for t, a in seed.select("target", "answer").iter_rows())
    assert arith_prompts["answer"].null_count() == 0  # gold answers everywhere, for evaluation


def test_arith_prompts_conform_and_are_deterministic(arith_prompts):
    out = conform(arith_prompts, PROMPTS)
    assert out.height == arith_prompts.height
    assert set(out["source"]) == {"arith"}
    again = build_arith_prompts(SMALL, run_seed=0)
    assert conform(again, PROMPTS).equals(out)
    other = build_arith_prompts(SMALL, run_seed=1)
    assert set(other["prompt_id"]) != set(arith_prompts["prompt_id"])


def test_arith_prompts_pass_leakage_check(arith_prompts):
    check_no_leakage(arith_prompts)


# ---------------------------------------------------------------- check_no_leakage
def leak_frame(test_text: str, train_text: str) -> pl.DataFrame:
    df = pl.DataFrame({"text": [test_text, train_text, "Something else entirely?"],
                       "split": ["test", "train", "seed"]})
    return df.with_columns(stable_ids(df["text"]))


@pytest.mark.parametrize("train_text", ["Mia has 3 pens. How many?", "  mia HAS 3 pens.\tHow   many?\n"])
def test_leakage_detected_even_with_case_and_whitespace_changes(train_text):
    df = leak_frame("Mia has 3 pens. How many?", train_text)
    with pytest.raises(InputDataError) as exc:
        check_no_leakage(df, source="data/my.jsonl")
    msg = str(exc.value)
    assert "1 test prompt(s)" in msg and "data/my.jsonl" in msg and "split" in msg and "Fix:" in msg
    assert "\n" not in msg


def test_no_leakage_for_different_prompts():
    check_no_leakage(leak_frame("Mia has 3 pens. How many?", "Mia has 4 pens. How many?"))


# ---------------------------------------------------------------- ingest_prompt_file
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"question": "Mia has 3 pens. How many?", "split": "seed", "gold": 3, "level": 1},
    {"question": "Tom has 5 coins. Then gets 2 more. How many?", "split": "train", "gold": 7, "level": 2},
    {"question": "Ava has 9 cards. Then loses 4. How many?", "split": "test", "gold": 5, "level": 2},
    {"question": "Zoe has 1 bead. How many? é", "split": "probe", "gold": 1, "level": 1},
]


def src_for(path: Path, **kw) -> FileSource:
    opts = dict(text_column="question", answer_column="gold", difficulty_column="level")
    opts.update(kw)
    return FileSource(path=str(path), **opts)


def assert_one_line_error(exc: pytest.ExceptionInfo, path: Path, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert "Fix:" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_ingest_valid_file(tmp_path, fmt):
    path = tmp_path / f"prompts.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, ROWS)
    else:
        pl.DataFrame(ROWS).write_parquet(path)
    df = ingest_prompt_file(src_for(path))
    out = conform(df, PROMPTS)
    assert out.height == 4
    got = {r["text"]: r for r in out.iter_rows(named=True)}
    assert got["Tom has 5 coins. Then gets 2 more. How many?"]["answer"] == "7"
    assert got["Tom has 5 coins. Then gets 2 more. How many?"]["difficulty"] == 2
    assert got["Zoe has 1 bead. How many? é"]["split"] == "probe"
    assert set(out["source"]) == {f"file:prompts.{fmt}"}
    assert out["target"].null_count() == 4
    assert out["prompt_id"].to_list() == stable_ids(out["text"]).to_list()


def test_ingest_without_optional_columns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": r["question"], "split": r["split"]} for r in ROWS])
    df = ingest_prompt_file(FileSource(path=str(path), answer_column=None))
    out = conform(df, PROMPTS)
    assert out["answer"].null_count() == 4
    assert out["difficulty"].null_count() == 4


def test_ingest_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": r["question"], "gold": r["gold"]} for r in ROWS])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path, difficulty_column=None))
    assert_one_line_error(exc, path, "missing column(s) ['split']", "prompts.source", "_column option")


def test_ingest_missing_answer_column_by_default(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": r["question"], "split": r["split"]} for r in ROWS])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(FileSource(path=str(path)))
    assert_one_line_error(exc, path, "['answer']")


def test_ingest_empty_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"")
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "empty")


def test_ingest_zero_rows(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame(ROWS).head(0).write_parquet(path)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "no rows")


def test_ingest_duplicate_prompts(tmp_path):
    rows = [*ROWS, {**ROWS[1], "question": "  TOM has 5 coins.  Then gets 2 more. How many?", "split": "seed"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "2 rows repeat a prompt", "question", "duplicate")


def test_ingest_unknown_split(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [*ROWS, {**ROWS[0], "question": "New?", "split": "validation"}])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "'validation'", "split", "seed")


def test_ingest_non_utf8_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes('{"question": "Caf\u00e9 has 3 pens?", "split": "seed", "gold": 3, "level": 1}\n'
                     .encode("latin-1"))
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "UTF-8")


def test_ingest_malformed_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "a", "split": \n', encoding="utf-8")
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "cannot be read")


def test_ingest_non_text_prompts(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{**r, "question": i} for i, r in enumerate(ROWS)])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "must hold text")


def test_ingest_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "p.jsonl"
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "file not found", "prompts.source.path")


def test_ingest_unsupported_suffix(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("question,split\na,seed\n")
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "'.csv'")


def test_number_ranges_reach_the_generator():
    src = ArithSource(seed_size=4, train_size_per_steps=20, probe_size=1, test_size=1, max_steps=1,
                      seed_mix=[1.0], max_start=5000, max_operand=3000)
    df = build_arith_prompts(src, run_seed=0)
    starts = df["text"].str.extract(r" has (\d+) ", 1).cast(pl.Int64)
    assert starts.max() > 20 and starts.max() <= 5000
    small = build_arith_prompts(src.model_copy(update={"max_start": 3, "max_operand": 2}), run_seed=0)
    assert small["text"].str.extract(r" has (\d+) ", 1).cast(pl.Int64).max() <= 3


# ---------------------------------------------------------------- row-level content (before any compute)
@pytest.mark.parametrize("bad, needle", [
    ({"question": ""}, "row 3: the prompt text in column 'question' is empty or missing"),
    ({"question": "   \t"}, "row 3: the prompt text"),
    ({"question": None}, "row 3: the prompt text"),
    ({"gold": [1, 2]}, "row 3: column 'gold' holds a list"),
    ({"gold": {"value": 5}}, "row 3: column 'gold' holds an object"),
    ({"gold": True}, "row 3: column 'gold' holds true/false"),
    ({"question": 12}, "row 3: column 'question' holds a whole number; it must hold text"),
    ({"level": "hard"}, "row 3: difficulty 'hard' holds no whole number"),
    ({"level": [1]}, "row 3: column 'level' holds a list"),
    ({"split": "dev"}, "row 3: unknown split value 'dev'"),
])
def test_bad_row_is_named_by_file_row_and_column(tmp_path, bad, needle):
    rows = [dict(r) for r in ROWS]
    rows[2].update(bad)
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, needle)


def test_a_missing_prompt_key_is_an_empty_prompt(tmp_path):
    rows = [dict(r) for r in ROWS]
    del rows[1]["question"]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "row 2: the prompt text")


def test_answers_may_mix_text_and_numbers(tmp_path):
    rows = [{**r, "gold": v} for r, v in zip(ROWS, [3, "7", 5.5, None])]
    df = ingest_prompt_file(src_for(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert df["answer"].to_list() == ["3", "7", "5.5", None]


def test_parquet_answer_column_of_lists_is_refused(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame([{**r, "gold": [r["gold"]]} for r in ROWS]).write_parquet(path)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "column 'gold' must hold text or a number")


def test_parquet_empty_prompt_row(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame([{**r, "question": None if i == 3 else r["question"]} for i, r in enumerate(ROWS)]).write_parquet(path)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "row 4: the prompt text")


def test_duplicate_rows_are_named(tmp_path):
    rows = [*ROWS, {**ROWS[1], "question": ROWS[1]["question"].upper(), "split": "seed"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "rows 2 and 5")


def test_ingest_keeps_row_origin_but_the_table_drops_it(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    df = ingest_prompt_file(src_for(path))
    assert df["_row"].to_list() == [1, 2, 3, 4] and set(df["_file"]) == {str(path)}
    assert "_row" not in conform(df, PROMPTS).columns


# ---------------------------------------------------------------- carve and one file per split


def plain_rows(n: int, start: int = 0) -> list[dict]:
    return [{"text": f"Q{i}: what is {i} + {i}?", "answer": str(2 * i),
             "solution": f"{i}+{i}={2 * i}. Answer: {2 * i}" if i % 4 else None} for i in range(start, start + n)]


def carve_src(path: Path, **kw) -> FileSource:
    return FileSource(path=str(path), target_column="solution", splits={"test": 0.2, "probe": 8, "seed": 0.3}, **kw)


def test_carve_a_file_without_a_split_column(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", plain_rows(200))
    out = conform(ingest_prompt_file(carve_src(path)), PROMPTS)
    sizes = dict(out.group_by("split").len().iter_rows())
    assert set(sizes) == {"test", "probe", "seed", "train"} and sizes["probe"] == 8 and sum(sizes.values()) == 200
    assert out.filter(pl.col("split") == "seed")["target"].null_count() == 0  # seed rows carry a solution
    assert set(out["source"]) == {"file:p.jsonl"}


def test_carve_depends_on_run_seed_and_survives_added_rows(tmp_path):
    small = write_jsonl(tmp_path / "small.jsonl", plain_rows(200))
    grown = write_jsonl(tmp_path / "grown.jsonl", plain_rows(100, start=200) + plain_rows(200))
    src = FileSource(path=str(small), target_column="solution", splits={"test": 0.2, "seed": 0.3})
    before = dict(ingest_prompt_file(src, run_seed=5).select("prompt_id", "split").iter_rows())
    after = dict(ingest_prompt_file(src.model_copy(update={"path": str(grown)}), run_seed=5)
                 .select("prompt_id", "split").iter_rows())
    assert {p: after[p] for p in before} == before
    other = dict(ingest_prompt_file(src, run_seed=6).select("prompt_id", "split").iter_rows())
    assert other != before


def test_carve_with_a_split_column_in_the_file_says_which_wins(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{**r, "split": "train"} for r in plain_rows(20)])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(carve_src(path))
    assert_one_line_error(exc, path, "unexpected column(s) ['split']", "prompts.source.splits")


def test_one_file_per_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", plain_rows(60))
    test = write_jsonl(tmp_path / "test.jsonl", plain_rows(20, start=60))
    seed = write_jsonl(tmp_path / "seed.jsonl", plain_rows(10, start=80))
    src = FileSource(path={"train": str(train), "test": str(test), "seed": str(seed)}, target_column="solution")
    out = conform(ingest_prompt_file(src), PROMPTS)
    assert dict(out.group_by("split").len().iter_rows()) == {"train": 60, "test": 20, "seed": 10}
    assert dict(out.group_by("split").agg(pl.col("source").first()).iter_rows()) == {
        "train": "file:train.jsonl", "test": "file:test.jsonl", "seed": "file:seed.jsonl"}


def test_one_file_per_split_with_seed_and_probe_carved_from_train(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", plain_rows(80))
    test = write_jsonl(tmp_path / "test.jsonl", plain_rows(20, start=80))
    src = FileSource(path={"train": str(train), "test": str(test)}, target_column="solution",
                     splits={"seed": 0.25, "probe": 6})
    out = ingest_prompt_file(src)
    assert out.filter(pl.col("_file") == str(test))["split"].unique().to_list() == ["test"]
    carved = dict(out.filter(pl.col("_file") == str(train)).group_by("split").len().iter_rows())
    assert carved["probe"] == 6 and carved["seed"] > 5 and sum(carved.values()) == 80


def test_leakage_between_split_files_names_both_rows(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", plain_rows(30))
    test = write_jsonl(tmp_path / "test.jsonl", plain_rows(5, start=30) + [{**plain_rows(1, start=7)[0],
                                                                             "text": " q7: WHAT is 7 + 7?"}])
    src = FileSource(path={"train": str(train), "test": str(test)}, target_column="solution", splits={"seed": 0.3})
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src)
    msg = assert_one_line_error(exc, train, "1 test prompt(s) also appear in training splits")
    assert f"row 8 of {train} is test row 6 of {test}" in msg


def test_a_prompt_in_two_training_files_is_named(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", plain_rows(30))
    seed = write_jsonl(tmp_path / "seed.jsonl", plain_rows(3, start=28))
    test = write_jsonl(tmp_path / "test.jsonl", plain_rows(5, start=40))
    src = FileSource(path={"train": str(train), "test": str(test), "seed": str(seed)}, target_column="solution")
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src)
    assert_one_line_error(exc, seed, f"row 29 of {train} repeats row 1 of {seed}", "one split's file")


@pytest.mark.parametrize("opts, needle", [
    ({"path": {"train": "a.jsonl", "validation": "b.jsonl"}}, "unknown split(s) ['validation']"),
    ({"path": {"test": "b.jsonl"}}, "needs a train file"),
    ({"path": "a.jsonl", "splits": {"train": 0.5}}, "cannot carve 'train'"),
    ({"path": "a.jsonl", "splits": {"test": 64}}, "test must be a share"),
    ({"path": "a.jsonl", "splits": {"test": 1.0}}, "neither a share"),
    ({"path": "a.jsonl", "splits": {"test": 0.2, "seed": -3}}, "neither a share"),
    ({"path": "a.jsonl", "splits": {"test": 0.2, "seed": True}}, "neither a share"),
    ({"path": "a.jsonl", "splits": {"test": 0.6, "seed": 0.5}}, "add up to 1 or more"),
    ({"path": "a.jsonl", "splits": {"seed": 0.2}}, "no test split"),
    ({"path": {"train": "a.jsonl"}}, "no test split"),
    ({"path": {"train": "a.jsonl", "test": "b.jsonl"}, "splits": {"test": 0.2}}, "have a file and a carve"),
])
def test_split_options_are_checked_in_the_recipe(opts, needle):
    from tasks.config.loading import recipe_from_dict
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        recipe_from_dict({"prompts": {"source": {"type": "file", **opts}}}, "r.yaml")
    msg = str(exc.value)
    assert needle in msg and "prompts.source" in msg and "\n" not in msg


def test_relative_paths_fall_back_to_the_code_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as inside a workspace, where `dvc repro` runs
    src = FileSource(path="data/examples/arith.jsonl", target_column="solution", splits={"test": 0.2})
    assert ingest_prompt_file(src).height == 300
    (tmp_path / "data" / "examples").mkdir(parents=True)
    write_jsonl(tmp_path / "data" / "examples" / "arith.jsonl", plain_rows(12))
    assert ingest_prompt_file(src).height == 12  # a file beside the working directory wins


def test_the_default_preset_prompts_table_is_byte_identical(tmp_path):
    """Recorded workspaces hash this table: the preset must keep writing the very same bytes."""
    import hashlib

    from tasks.config.loading import load_recipe
    from tasks.stages.prepare import prepare

    out = prepare(load_recipe(Path(__file__).resolve().parent.parent / "configs" / "tiny-arith.yaml"),
                  tmp_path / "prompts.parquet")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == \
        "3ff7b2b240a09d7717ff761cf14e6998a5736e684cb98a0fbfc2cd6b12eaee84"
