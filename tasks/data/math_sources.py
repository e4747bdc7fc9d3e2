"""Real-task prompt sources: GSM8K / MATH answer formats, and datasets loaded with `datasets`.

`apply_answer_format` turns a raw answer column into gold answers and seed targets:
  - plain: the answer column is the gold as is;
  - gsm8k: gold = the text after '####' (commas dropped); the seed target is the reasoning with
    the `<<48/2=24>>` calculator notes removed, ending in "The final answer is $\\boxed{gold}$.";
  - boxed (MATH): gold = the content of the solution's last `\\boxed{...}` (or `\\fbox{...}`).
Only seed rows keep a target: it is what the warm-up fine-tunes on.

`load_hub_prompts` reads each of our splits from a Hugging Face dataset (a Hub id, or a local
folder/file for offline use) and maps its columns onto the prompts table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from tasks.config.recipe import HubSource
from tasks.data.schema import SPLITS, stable_ids
from tasks.errors import InputDataError

log = logging.getLogger(__name__)

CALCULATOR_NOTE = r"<<[^>]*>>"


def _nested_braces(depth: int) -> str:
    """A regex for brace-balanced text up to `depth` levels deep (the regex engine has no recursion)."""
    inner = r"[^{}]*"
    for _ in range(depth):
        inner = r"(?:[^{}]|\{" + inner + r"\})*"
    return inner


BOXED = r"\\(?:boxed|fbox)\s*\{(" + _nested_braces(5) + r")\}"


def boxed_content(text: pl.Expr) -> pl.Expr:
    """The content of the last `\\boxed{...}` in each text (null when there is none)."""
    return text.str.extract_all(BOXED).list.last().str.extract(BOXED, 1).str.strip_chars()


def gsm8k_gold(text: pl.Expr) -> pl.Expr:
    """The final answer after GSM8K's last '####', without thousands separators."""
    return text.str.extract(r"(?s)^.*####([^\n]*)", 1).str.strip_chars().str.replace_all(",", "") \
        .replace("", None)


def gsm8k_target(solution: pl.Expr, gold: pl.Expr) -> pl.Expr:
    """The worked solution without calculator notes, ending in a form math-verify extracts."""
    reasoning = solution.str.replace(r"(?s)####.*$", "").str.replace_all(CALCULATOR_NOTE, "").str.strip_chars()
    return pl.concat_str([reasoning, pl.lit("\nThe final answer is $\\boxed{"), gold, pl.lit("}$.")])


def _difficulty_int(df: pl.DataFrame) -> pl.DataFrame:
    """Text difficulties such as MATH's 'Level 3' become their integer."""
    if df.schema["difficulty"] == pl.String:
        return df.with_columns(pl.col("difficulty").str.extract(r"(-?\d+)", 1).cast(pl.Int32))
    return df


def apply_answer_format(df: pl.DataFrame, fmt: str, *, source: str) -> pl.DataFrame:
    """Gold answers and seed-only targets from the raw `answer` and `target` columns of a prompts frame.

    A labelled row whose answer is not in `fmt` is dropped with a warning; when no labelled row is
    in `fmt`, the format is wrong and this is an error. Unlabelled rows (null answer) are kept."""
    labelled = df["answer"].is_not_null()
    if fmt == "gsm8k":
        df = df.with_columns(answer=gsm8k_gold(pl.col("answer"))).with_columns(
            target=gsm8k_target(pl.col("target"), pl.col("answer")))
    elif fmt == "boxed":
        df = df.with_columns(answer=boxed_content(pl.col("answer")))
    malformed = labelled & df["answer"].is_null()
    if malformed.any():
        if malformed.sum() == labelled.sum():
            raise InputDataError(f"no answer is in the '{fmt}' format.", file=source,
                                 field="prompts.source.answer_format",
                                 fix="set answer_format to the format of the answer column (plain, gsm8k or boxed).")
        log.warning("%s: dropped %d row(s) whose answer is not in the '%s' format", source, malformed.sum(), fmt)
        df = df.filter(~malformed)
    return _difficulty_int(df).with_columns(target=pl.when(pl.col("split") == "seed").then(pl.col("target")))


# ---------------------------------------------------------------- Hugging Face datasets
DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _load_error(exc: Exception, src: HubSource, split: str) -> InputDataError:
    text = " ".join(str(exc).split())[:300]
    expr = src.splits[split]
    if isinstance(exc, ConnectionError):
        return InputDataError(f"cannot reach the Hugging Face Hub ({text}).", file=src.dataset,
                              field="prompts.source.dataset", fix="download its files where there is network "
                              "(`hf download ID --repo-type dataset --local-dir DIR`) and point "
                              "prompts.source.dataset at the folder holding its Parquet/JSONL files.")
    if isinstance(exc, FileNotFoundError):
        return InputDataError(f"dataset not found ({text}).", file=src.dataset, field="prompts.source.dataset",
                              fix="give a Hub id such as 'openai/gsm8k' or an existing local folder or file.")
    if isinstance(exc, ValueError) and "BuilderConfig" in str(exc):
        return InputDataError(f"unknown configuration {src.config!r} ({text}).", file=src.dataset,
                              field="prompts.source.config", fix="set config to one the dataset lists.")
    if isinstance(exc, ValueError) and ("split" in str(exc).lower() or "instruction" in str(exc).lower()):
        return InputDataError(f"cannot read split {expr!r} ({text}).", file=src.dataset,
                              field=f"prompts.source.splits.{split}",
                              fix="use a split the dataset has, optionally sliced, e.g. 'train' or 'train[:1000]'.")
    return InputDataError(f"cannot load split {expr!r} ({type(exc).__name__}: {text}).", file=src.dataset,
                          field="prompts.source.dataset", fix="check the dataset id or path, config and revision.")


def load_split(src: HubSource, split: str):
    """One of our splits as a `datasets.Dataset` (a single local data file is the dataset's 'train' split)."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(src.dataset).expanduser()
    try:
        if path.is_file():
            builder = DATA_FILE_BUILDERS.get(path.suffix)
            if builder is None:
                raise InputDataError(f"unsupported file type '{path.suffix}'.", file=src.dataset,
                                     field="prompts.source.dataset", fix=f"use one of {sorted(DATA_FILE_BUILDERS)}.")
            return datasets.load_dataset(builder, data_files={"train": str(path)}, split=src.splits[split])
        return datasets.load_dataset(str(path) if path.is_dir() else src.dataset, src.config,
                                     split=src.splits[split], revision=src.revision)
    except InputDataError:
        raise
    except Exception as exc:  # datasets raises many types; name the field the user can change
        raise _load_error(exc, src, split) from None


def _column_mapping(src: HubSource) -> dict[str, str]:
    mapping = {"text": src.text_column, "answer": src.answer_column}
    if src.target_column:
        mapping["target"] = src.target_column
    if src.difficulty_column:
        mapping["difficulty"] = src.difficulty_column
    return mapping


def _read_split(src: HubSource, split: str, mapping: dict[str, str]) -> pl.DataFrame:
    ds = load_split(src, split)
    for key, column in mapping.items():
        if column not in ds.column_names:
            raise InputDataError(f"split {src.splits[split]!r} has no column {column!r}; found {ds.column_names}.",
                                 file=src.dataset, field=f"prompts.source.{key}_column",
                                 fix=f"set {key}_column to one of the dataset's columns.")
    frame = ds.select_columns(sorted(set(mapping.values()))).to_polars()
    if frame.height == 0:
        raise InputDataError(f"split {src.splits[split]!r} has no rows.", file=src.dataset,
                             field=f"prompts.source.splits.{split}", fix="choose a split or slice with rows.")
    if frame.schema[src.text_column] != pl.String:
        raise InputDataError(f"column {src.text_column!r} must hold text, not {frame.schema[src.text_column]}.",
                             file=src.dataset, field="prompts.source.text_column", fix="map the prompt column.")
    return frame.select(pl.col(v).alias(k) for k, v in mapping.items()).with_columns(
        pl.col("answer").cast(pl.String), split=pl.lit(split))


def _dedup(df: pl.DataFrame, src: HubSource) -> pl.DataFrame:
    """One row per prompt: test keeps its own; seed, probe and train (in that order of priority)
    share one set, so a question repeated in the dataset is never in two training splits."""
    rank = {s: i for i, s in enumerate(("test", "seed", "probe", "train"))}
    df = df.sort(pl.col("split").replace_strict(rank), maintain_order=True)
    is_test = pl.col("split") == "test"
    out = pl.concat([df.filter(is_test).unique("prompt_id", keep="first", maintain_order=True),
                     df.filter(~is_test).unique("prompt_id", keep="first", maintain_order=True)])
    if out.height < df.height:
        log.warning("%s: dropped %d repeated prompt(s)", src.dataset, df.height - out.height)
    if src.drop_test_overlap:
        test_ids = out.filter(is_test)["prompt_id"].implode()
        overlap = ~is_test & pl.col("prompt_id").is_in(test_ids)
        n = out.filter(overlap).height
        if n:
            log.warning("%s: dropped %d seed/train/probe prompt(s) that are also test prompts", src.dataset, n)
        out = out.filter(~overlap)
    return out


def load_hub_prompts(src: HubSource) -> pl.DataFrame:
    """The prompts table (before the leakage check) from a Hugging Face dataset."""
    mapping = _column_mapping(src)
    df = pl.concat([_read_split(src, s, mapping) for s in SPLITS if s in src.splits], how="vertical_relaxed")
    name = Path(src.dataset).name if Path(src.dataset).expanduser().exists() else src.dataset
    df = df.with_columns(
        stable_ids(df["text"]), source=pl.lit(f"hub:{name}"),
        *([] if "target" in df.columns else [pl.lit(None, pl.String).alias("target")]),
        *([] if "difficulty" in df.columns else [pl.lit(None, pl.Int32).alias("difficulty")]))
    return apply_answer_format(_dedup(df, src), src.answer_format, source=src.dataset)
