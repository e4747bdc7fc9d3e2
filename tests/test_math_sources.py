"""tasks/data/math_sources.py (+ the prepare dispatch): GSM8K / MATH prompts from local files and from
`datasets`, pointed at the shipped fixtures; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from tasks.config.loading import load_recipe
from tasks.config.recipe import FileSource, HubSource, Recipe
from tasks.data.math_sources import apply_answer_format, boxed_content, load_hub_prompts
from tasks.data.schema import PROMPTS, read_table
from tasks.errors import ConfigError, InputDataError
from tasks.stages.prepare import ingest_prompt_file, prepare

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GSM8K, MATH = FIXTURES / "gsm8k", FIXTURES / "math"
GSM8K_SPLITS = {"seed": "train[:8]", "probe": "train[8:12]", "train": "train[12:]", "test": "test"}


@pytest.fixture(autouse=True)
def _offline_datasets(tmp_path, monkeypatch):
    """No network, and the `datasets` cache in a temporary folder."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def gsm8k_hub(**overrides) -> HubSource:
    return HubSource(**{"dataset": str(GSM8K), "splits": GSM8K_SPLITS, "target_column": "answer",
                        "answer_format": "gsm8k", **overrides})


def math_hub(**overrides) -> HubSource:
    return HubSource(**{"dataset": str(MATH), "splits": {"seed": "train[:6]", "train": "train[6:]", "test": "test"},
                        "text_column": "problem", "answer_column": "solution", "target_column": "solution",
                        "difficulty_column": "level", "answer_format": "boxed", **overrides})


def fixture_rows(folder: Path) -> pl.DataFrame:
    """The fixture's train and test files as one frame with a split column (seed: the first 8 train rows)."""
    train = pl.read_ndjson(folder / "train.jsonl").with_row_index("_i")
    train = train.with_columns(split=pl.when(pl.col("_i") < 8).then(pl.lit("seed")).otherwise(pl.lit("train")))
    return pl.concat([train.drop("_i"), pl.read_ndjson(folder / "test.jsonl").with_columns(split=pl.lit("test"))])


def by_text(df: pl.DataFrame) -> dict[str, dict]:
    return {r["text"]: r for r in df.iter_rows(named=True)}


def run_prepare(tmp_path: Path, source) -> pl.DataFrame:
    out = prepare(Recipe(prompts={"source": source}), tmp_path / "prompts.parquet")
    return read_table(out, PROMPTS)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Fix:" in msg
    return msg


# ---------------------------------------------------------------- answer formats
def test_gsm8k_format_gold_and_seed_target():
    raw = pl.DataFrame({"text": ["q1", "q2", "q3"], "split": ["seed", "train", "seed"],
                        "answer": ["6 * 7 = <<6*7=42>>42 pencils.\n#### 42", "x <<1+1=2>>2\n#### 1,200", None],
                        "target": ["6 * 7 = <<6*7=42>>42 pencils.\n#### 42", "x <<1+1=2>>2\n#### 1,200", None],
                        "difficulty": [None, None, None]}, schema_overrides={"difficulty": pl.Int32})
    out = apply_answer_format(raw, "gsm8k", source="t")
    assert out["answer"].to_list() == ["42", "1200", None]  # the unlabelled row stays, unlabelled
    assert out["target"].to_list() == ["6 * 7 = 42 pencils.\nThe final answer is $\\boxed{42}$.", None, None]


def test_boxed_format_takes_the_last_box_with_nested_braces():
    texts = pl.Series(["so $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "first \\boxed{2}, then \\boxed{3}", "\\fbox{7}",
                       "\\boxed{\\left(\\frac{1}{2}, \\sqrt{\\frac{3}{4}}\\right)}", "none"])
    got = pl.select(boxed_content(pl.lit(texts))).to_series().to_list()
    assert got == ["\\frac{\\sqrt{3}}{2}", "3", "7", "\\left(\\frac{1}{2}, \\sqrt{\\frac{3}{4}}\\right)", None]


def test_plain_format_leaves_existing_file_ingest_unchanged(tmp_path):
    """Existing recipes (plain answers, no target column) give the very same prompts table."""
    path = tmp_path / "p.jsonl"
    pl.DataFrame({"text": ["a?", "b?", "c?"], "answer": ["1", "2", "3"], "split": ["seed", "train", "test"],
                  "difficulty": [1, 2, 3]}).write_ndjson(path)
    src = FileSource(path=str(path), difficulty_column="difficulty")
    before = ingest_prompt_file(src)
    assert apply_answer_format(before, "plain", source=str(path)).equals(before)


def test_malformed_rows_dropped_but_a_wrong_format_is_an_error():
    raw = pl.DataFrame({"text": ["a", "b"], "split": ["train", "train"], "answer": ["#### 4", "no marker"],
                        "target": [None, None], "difficulty": [None, None]},
                       schema_overrides={"target": pl.String, "difficulty": pl.Int32})
    assert apply_answer_format(raw, "gsm8k", source="t")["text"].to_list() == ["a"]
    with pytest.raises(InputDataError) as exc:
        apply_answer_format(raw, "boxed", source="t")
    assert "prompts.source.answer_format" in one_line(exc)


# ---------------------------------------------------------------- local files
def test_local_jsonl_gsm8k_with_column_mapping(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    fixture_rows(GSM8K).write_ndjson(path)
    src = FileSource(path=str(path), text_column="question", answer_column="answer", target_column="answer",
                     answer_format="gsm8k")
    df = run_prepare(tmp_path, src)
    assert dict(df.group_by("split").len().iter_rows()) == {"seed": 8, "train": 16, "test": 8}
    rows = by_text(df)
    assert rows["A factory packs 150 bottles into each crate. How many bottles are in 8 crates?"]["answer"] == "1200"
    seed = df.filter(pl.col("split") == "seed")
    assert seed["target"].str.ends_with("}$.").all() and not seed["target"].str.contains("<<").any()
    assert df.filter(pl.col("split") != "seed")["target"].null_count() == 24
    assert (df["source"] == "file:gsm8k.jsonl").all()


def test_local_parquet_math_with_difficulty_and_extra_columns(tmp_path):
    path = tmp_path / "math.parquet"
    fixture_rows(MATH).write_parquet(path)
    src = FileSource(path=str(path), text_column="problem", answer_column="solution", target_column="solution",
                     difficulty_column="level", extra_columns=["type"], answer_format="boxed")
    df = run_prepare(tmp_path, src)
    rows = by_text(df)
    sin = rows["What is $\\sin 60^\\circ$?"]
    assert (sin["answer"], sin["difficulty"], sin["split"]) == ("\\frac{\\sqrt{3}}{2}", 2, "train")
    assert rows["Solve $x^2 - 5x + 6 = 0$ and give the larger root."]["answer"] == "3"  # the last box
    seed = df.filter(pl.col("split") == "seed")
    assert seed["target"].str.contains("\\boxed{", literal=True).all()


def test_local_file_target_column_must_exist(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    fixture_rows(GSM8K).write_ndjson(path)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(FileSource(path=str(path), text_column="question", target_column="solution"))
    assert "solution" in one_line(exc)


# ---------------------------------------------------------------- datasets (local folder through load_dataset)
def test_hub_source_reads_the_gsm8k_folder_with_split_slices(tmp_path):
    df = run_prepare(tmp_path, gsm8k_hub())
    assert dict(df.group_by("split").len().iter_rows()) == {"seed": 8, "probe": 4, "train": 12, "test": 8}
    first = "Mia has 12 apples. She buys 8 more apples. How many apples does Mia have now?"
    row = by_text(df)[first]
    assert (row["split"], row["answer"], row["source"]) == ("seed", "20", "hub:gsm8k")
    assert row["target"] == "Mia has 12 + 8 = 20 apples now.\nThe final answer is $\\boxed{20}$."
    assert df.filter(pl.col("split") != "seed")["target"].null_count() == 24


def test_hub_source_math_levels_become_difficulty(tmp_path):
    df = run_prepare(tmp_path, math_hub())
    assert sorted(df["difficulty"].unique().to_list()) == [1, 2, 3]
    assert by_text(df)["Simplify $\\frac{10}{15}$."]["answer"] == "\\frac{2}{3}"


def test_hub_source_single_local_file_is_the_train_split(tmp_path):
    df = load_hub_prompts(gsm8k_hub(dataset=str(GSM8K / "train.jsonl"),
                                    splits={"seed": "train[:4]", "train": "train[4:20]", "test": "train[20:]"}))
    assert dict(df.group_by("split").len().iter_rows()) == {"seed": 4, "train": 16, "test": 4}


@pytest.mark.parametrize("overrides, field", [
    ({"text_column": "prompt"}, "prompts.source.text_column"),
    ({"target_column": "solution"}, "prompts.source.target_column"),
    ({"dataset": "/nonexistent/gsm8k"}, "prompts.source.dataset"),
    ({"dataset": "openai/gsm8k", "config": "main"}, "prompts.source.dataset"),  # a Hub id, offline
    ({"splits": {**GSM8K_SPLITS, "test": "validation"}}, "prompts.source.splits.test"),
    ({"splits": {**GSM8K_SPLITS, "train": "train[:abc]"}}, "prompts.source.splits.train"),
    ({"answer_format": "boxed"}, "prompts.source.answer_format"),
])
def test_hub_source_errors_name_the_field(overrides, field):
    with pytest.raises(InputDataError) as exc:
        load_hub_prompts(gsm8k_hub(**overrides))
    assert f": {field}: " in one_line(exc)


def test_hub_source_missing_column_message_lists_the_columns():
    with pytest.raises(InputDataError) as exc:
        load_hub_prompts(gsm8k_hub(text_column="prompt"))
    assert "'prompt'" in str(exc.value) and "['question', 'answer']" in str(exc.value)


@pytest.fixture
def leaky_folder(tmp_path) -> Path:
    """The GSM8K fixture with one test question also in train."""
    folder = tmp_path / "leaky"
    folder.mkdir()
    test = (GSM8K / "test.jsonl").read_text()
    (folder / "test.jsonl").write_text(test)
    (folder / "train.jsonl").write_text((GSM8K / "train.jsonl").read_text() + test.splitlines()[2] + "\n")
    return folder


def test_leakage_is_refused(tmp_path, leaky_folder):
    with pytest.raises(InputDataError) as exc:
        run_prepare(tmp_path, gsm8k_hub(dataset=str(leaky_folder)))
    assert "1 test prompt(s) also appear in training splits" in one_line(exc)


def test_leakage_dropped_when_asked(tmp_path, leaky_folder):
    df = run_prepare(tmp_path, gsm8k_hub(dataset=str(leaky_folder), drop_test_overlap=True))
    leaked = "Leo has 75 cards and loses 18. How many cards does he have?"
    assert df.filter(pl.col("text") == leaked)["split"].to_list() == ["test"]
    assert df.filter(pl.col("split") == "train").height == 12


def test_repeated_questions_keep_one_row(tmp_path):
    """A question repeated in the dataset stays in the first of seed, probe, train."""
    df = load_hub_prompts(gsm8k_hub(splits={"seed": "train[:8]", "train": "train", "test": "test"}))
    assert dict(df.group_by("split").len().iter_rows()) == {"seed": 8, "train": 16, "test": 8}
    assert df["prompt_id"].is_unique().all()


# ---------------------------------------------------------------- recipe
def test_hub_source_in_a_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"prompts": {"source": {"type": "hub", "dataset": "openai/gsm8k",
                                                           "config": "main", "splits": {"train": "train",
                                                                                        "test": "test"},
                                                           "text_colum": "question"}}}))
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    assert "prompts.source.text_colum: unknown key" in str(exc.value) and "text_column" in str(exc.value)
    path.write_text(yaml.safe_dump({"prompts": {"source": {"type": "hub", "dataset": "x", "splits": {"train": "t"}}},
                                    "verifier": {"type": "math_verify"}}))
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    assert "prompts.source.splits" in str(exc.value) and "'test'" in str(exc.value)


def test_file_source_format_needs_an_answer_column():
    with pytest.raises(ValueError, match="needs answer_column"):
        FileSource(path="x.jsonl", answer_column=None, answer_format="gsm8k")
