"""Stage `prepare`: build or ingest the prompts table (seed, train, probe and test splits)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.arith import generate_problems
from tasks.config import ArithSource, FileSource, HubSource, MBPPSource, Recipe
from tasks.errors import InputDataError
from tasks.schema import PROMPTS, SPLITS, stable_ids, write_table
from tasks.seeds import derive_seed


def _dedup_take(df: pl.DataFrame, n: int, exclude: set[str]) -> pl.DataFrame:
    df = df.with_columns(stable_ids(df["text"]))
    df = df.unique("prompt_id", keep="first", maintain_order=True)
    return df.filter(~pl.col("prompt_id").is_in(list(exclude))).head(n)


def _apportion(total: int, shares: list[float], n: int) -> list[int]:
    """Split `total * sum(shares)` into `n` whole counts (largest remainder), so they add up exactly."""
    exact = [total * s for s in shares] + [0.0] * (n - len(shares))
    counts = [int(x) for x in exact]
    order = sorted(range(n), key=lambda i: counts[i] - exact[i])  # largest fractional part first
    for i in order[:round(sum(exact)) - sum(counts)]:
        counts[i] += 1
    return counts


def build_arith_prompts(src: ArithSource, run_seed: int) -> pl.DataFrame:
    """Test first, then probe, seed and train, each excluding every earlier split's ids."""
    levels = list(range(1, src.max_steps + 1))
    plan: dict[str, dict[int, int]] = {
        "test": {s: src.test_size // len(levels) + (i < src.test_size % len(levels)) for i, s in enumerate(levels)},
        "probe": {s: src.probe_size // len(levels) + (i < src.probe_size % len(levels)) for i, s in enumerate(levels)},
        "seed": dict(zip(levels, _apportion(src.seed_size, src.seed_mix[:len(levels)], len(levels)))),
        "train": {s: src.train_size_per_steps for s in levels},
    }
    taken: set[str] = set()
    parts = []
    for split in ("test", "probe", "seed", "train"):
        for steps, n in plan[split].items():
            if n == 0:
                continue
            raw = generate_problems(3 * n + 50, steps, derive_seed(run_seed, "prepare", split, steps),
                                    src.max_start, src.max_operand)
            got = _dedup_take(raw, n, taken)
            if got.height < n:
                raise InputDataError(f"only {got.height} distinct {steps}-step problems for split {split}.",
                                     field=f"prompts.source.{split}_size", fix="ask for fewer prompts.")
            taken.update(got["prompt_id"].to_list())
            parts.append(got.with_columns(split=pl.lit(split), source=pl.lit("arith")))
    df = pl.concat(parts)
    # Only the seed split is labelled with a chain of thought.
    return df.with_columns(target=pl.when(pl.col("split") == "seed").then("target"))


def _read_prompt_file(src: FileSource | MBPPSource) -> pl.DataFrame:
    path = Path(src.path)
    if not path.is_file():
        raise InputDataError("file not found.", file=str(path), field="prompts.source.path",
                             fix="point prompts.source.path at an existing .parquet or .jsonl file.")
    if path.stat().st_size == 0:
        raise InputDataError("file is empty.", file=str(path), fix="add prompts to the file.")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix in (".jsonl", ".json"):
            path.read_text(encoding="utf-8")  # fail early on a wrong encoding
            return pl.read_ndjson(path, infer_schema_length=None)
    except UnicodeDecodeError:
        raise InputDataError("not valid UTF-8.", file=str(path), fix="re-encode the file as UTF-8.") from None
    except Exception as exc:  # polars raises several types for malformed files
        raise InputDataError(f"cannot be read ({type(exc).__name__}).", file=str(path),
                             fix="check that it is valid Parquet or JSON lines.") from None
    raise InputDataError(f"unsupported file type '{path.suffix}'.", file=str(path),
                         fix="use .parquet or .jsonl.")


def ingest_prompt_file(src: FileSource) -> pl.DataFrame:
    """Validate a user prompt file and map its columns onto the prompts table."""
    df = _read_prompt_file(src)
    file = src.path
    mapping = {"text": src.text_column, "split": src.split_column}
    if src.answer_column:
        mapping["answer"] = src.answer_column
    if src.difficulty_column:
        mapping["difficulty"] = src.difficulty_column
    if src.target_column:
        mapping["target"] = src.target_column
    missing = [col for col in mapping.values() if col not in df.columns]
    if missing:
        raise InputDataError(f"missing column(s) {missing}; found {df.columns}.", file=file,
                             field="prompts.source", fix="add the column or set the matching *_column option.")
    extra = [col for col in df.columns if col not in mapping.values() and col not in src.extra_columns]
    if extra:
        raise InputDataError(f"unexpected column(s) {extra}.", file=file, field="prompts.source",
                             fix="map them with *_column, list them in prompts.source.extra_columns, or drop them.")
    if df.height == 0:
        raise InputDataError("no rows.", file=file, fix="add prompts to the file.")
    out = df.select([pl.col(v).alias(k) for k, v in mapping.items()])
    if out.schema["text"] != pl.String:
        raise InputDataError(f"column '{src.text_column}' must hold text, not {out.schema['text']}.",
                             file=file, field=src.text_column, fix="store prompts as strings.")
    bad_split = out.filter(~pl.col("split").is_in(list(SPLITS)))
    if bad_split.height:
        raise InputDataError(f"unknown split value {bad_split['split'][0]!r}.", file=file,
                             field=src.split_column, fix=f"use one of {list(SPLITS)}.")
    out = out.with_columns(
        stable_ids(out["text"]),
        pl.col("answer").cast(pl.String) if "answer" in out.columns else pl.lit(None, pl.String).alias("answer"),
        pl.lit(f"file:{Path(file).name}").alias("source"),
        pl.col("target").cast(pl.String) if "target" in out.columns else pl.lit(None, pl.String).alias("target"),
        *([] if "difficulty" in out.columns else [pl.lit(None, pl.Int32).alias("difficulty")]),
    )
    dup = out.filter(pl.col("prompt_id").is_duplicated())
    if dup.height:
        raise InputDataError(f"{dup.height} rows repeat a prompt (same normalised text), e.g. "
                             f"{dup['text'][0][:40]!r}.", file=file, field=src.text_column,
                             fix="remove duplicate prompts.")
    return out


def check_no_leakage(prompts: pl.DataFrame, source: str = "prompts") -> None:
    """No held-out test prompt may appear, by normalised-text hash, in any other split."""
    test_ids = prompts.filter(pl.col("split") == "test")["prompt_id"]
    leaked = prompts.filter((pl.col("split") != "test") & pl.col("prompt_id").is_in(test_ids.implode()))
    if leaked.height:
        raise InputDataError(f"{leaked.height} test prompt(s) also appear in training splits.",
                             file=source, field="split", fix="remove them from the seed/train/probe splits.")


def prepare(recipe: Recipe, out_path: Path) -> Path:
    src = recipe.prompts.source
    if isinstance(src, ArithSource):
        df = build_arith_prompts(src, recipe.run.seed)
    elif isinstance(src, MBPPSource):
        from tasks.mbpp import mbpp_prompts

        df = mbpp_prompts(_read_prompt_file(src), src)
    elif isinstance(src, HubSource):
        from tasks.math_sources import load_hub_prompts

        df = load_hub_prompts(src)
    else:
        from tasks.math_sources import apply_answer_format

        df = apply_answer_format(ingest_prompt_file(src), src.answer_format, source=src.path)
    check_no_leakage(df, getattr(src, "path", None) or getattr(src, "dataset", "prompts"))
    return write_table(df, out_path, PROMPTS)
