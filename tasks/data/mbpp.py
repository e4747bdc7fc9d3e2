"""MBPP-format code tasks onto the prompts table.

An MBPP row has task_id, text (the task), code (a reference solution), test_list (assert
statements) and test_setup_code. Each becomes one prompt:
- text: the task followed by its first test, which shows the expected function name and
  signature (as in the MBPP paper's prompts);
- answer: the tests as a JSON list of statements (test_setup_code first when not empty), the
  format the `unit_tests` verifier runs after a sample's code;
- target (seed split only): the reference code in a ```python fenced block;
- split: a split column if configured, else MBPP's task_id ranges: test 11-510, validation
  511-600 as probe, and prompt 1-10 plus train 601-974 (lowest id first) as `seed_size` seed
  tasks and an unlabelled train pool.
"""

from __future__ import annotations

import duckdb
import polars as pl

from tasks.config.recipe import MBPPSource
from tasks.data.schema import SPLITS, stable_ids
from tasks.errors import InputDataError

REQUIRED = ("task_id", "text", "code", "test_list")
PROMPT_HINT = "Your code should pass this test:"


def _split_by_task_id(seed_size: int) -> pl.Expr:
    tid = pl.col("task_id")
    labelled_range = tid.is_between(1, 10) | tid.is_between(601, 974)
    rank = pl.when(labelled_range).then(tid).rank("ordinal").over(labelled_range)
    return (pl.when(tid.is_between(11, 510)).then(pl.lit("test"))
            .when(tid.is_between(511, 600)).then(pl.lit("probe"))
            .when(labelled_range & (rank <= seed_size)).then(pl.lit("seed"))
            .when(labelled_range).then(pl.lit("train")))


def _check_columns(df: pl.DataFrame, src: MBPPSource) -> None:
    needed = [*REQUIRED, *([src.split_column] if src.split_column else [])]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputDataError(f"missing MBPP column(s) {missing}; found {df.columns}.", file=src.path,
                             field="prompts.source", fix="use MBPP's full format (task_id, text, code, test_list, "
                                                         "test_setup_code) or set split_column.")
    if df.height == 0:
        raise InputDataError("no rows.", file=src.path, fix="add tasks to the file.")
    if df.schema["test_list"] not in (pl.List(pl.String), pl.List(pl.Null)) or df.schema["text"] != pl.String:
        raise InputDataError(f"test_list must be a list of strings and text a string, not "
                             f"{df.schema['test_list']} / {df.schema['text']}.", file=src.path, field="test_list",
                             fix="store each task's tests as a JSON list of assert strings.")
    empty = df.filter(pl.col("test_list").list.len().fill_null(0) == 0)
    if empty.height:
        raise InputDataError(f"task {empty['task_id'][0]} has no tests.", file=src.path, field="test_list",
                             fix="give every task at least one assert.")


def mbpp_prompts(raw: pl.DataFrame, src: MBPPSource) -> pl.DataFrame:
    """The prompts table (without checks across splits) for MBPP rows already read from `src.path`."""
    _check_columns(raw, src)
    setup = (pl.col("test_setup_code").str.replace_all("\r\n", "\n").str.strip_chars()
             if "test_setup_code" in raw.columns else pl.lit(None, pl.String))
    df = raw.with_columns(
        pl.col("task_id").cast(pl.Int64, strict=False),
        pl.col("test_list").cast(pl.List(pl.String)),
        code=pl.col("code").str.replace_all("\r\n", "\n").str.strip_chars(),
        tests=pl.when(setup.fill_null("") != "").then(pl.concat_list(setup, pl.col("test_list")))
        .otherwise(pl.col("test_list")),
        split=pl.col(src.split_column).cast(pl.String) if src.split_column else _split_by_task_id(src.seed_size),
    )
    bad = df.filter(pl.col("split").is_null() | ~pl.col("split").is_in(list(SPLITS)))
    if bad.height:
        raise InputDataError(f"task {bad['task_id'][0]} has no valid split.", file=src.path,
                             field=src.split_column or "task_id",
                             fix=f"use MBPP's task_id ranges (1-974) or a split column with values {list(SPLITS)}.")
    text = pl.format("{}\n{}\n{}", pl.col("text").str.strip_chars(), pl.lit(PROMPT_HINT),
                     pl.col("test_list").list.first())
    target = pl.when(pl.col("split") == "seed").then(pl.format("```python\n{}\n```", pl.col("code")))
    out = df.select(text.alias("text"), "tests", "split", target.alias("target"), "task_id").with_row_index("_i")
    # JSON-encode each list of tests in one vectorised pass
    answers = duckdb.sql("SELECT to_json(tests)::VARCHAR AS answer FROM out ORDER BY _i").pl()["answer"]
    out = out.with_columns(answers, stable_ids(out["text"]), source=pl.lit("mbpp"),
                           difficulty=pl.lit(None, pl.Int32))
    dup = out.filter(pl.col("prompt_id").is_duplicated())
    if dup.height:
        raise InputDataError(f"tasks {sorted(dup['task_id'].to_list())[:4]} repeat a prompt (same text and first "
                             "test).", file=src.path, field="text", fix="remove duplicate tasks.")
    return out.drop("tests", "task_id", "_i")
