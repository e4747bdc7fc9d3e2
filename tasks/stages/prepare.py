"""Stage `prepare`: build or ingest the prompts table (seed, train, probe and test splits)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import ArithSource, FileSource, HubSource, MBPPSource, Recipe
from tasks.data.arith import generate_problems
from tasks.data.schema import PROMPTS, stable_ids, write_table
from tasks.errors import InputDataError
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
    """The single file at `src.path`, read (MBPP's loader maps its columns itself)."""
    from tasks.data.prompt_files import read_prompt_file

    return read_prompt_file(src.path)


def _refuse_repeats(df: pl.DataFrame, text_column: str) -> None:
    """A prompt (same normalised text) twice in one file, or in two training files. A test prompt
    that is also in another file is the leakage check's to name."""
    within = df.filter(pl.col("prompt_id").is_duplicated().over("_file"))
    if within.height:
        first = within.filter(pl.col("prompt_id") == within["prompt_id"][0])
        rows = " and ".join(str(r) for r in first["_row"].head(2).to_list())
        raise InputDataError(f"{within.height} rows repeat a prompt (same normalised text), e.g. rows {rows}: "
                             f"{first['text'][0][:40]!r}.", file=first["_file"][0], field=text_column,
                             fix="remove duplicate prompts.")
    check_no_leakage(df, "prompts")
    across = df.filter(pl.col("prompt_id").is_duplicated()).sort("_file", "_row")
    if across.height:
        a, b = across.filter(pl.col("prompt_id") == across["prompt_id"][0]).head(2).iter_rows(named=True)
        raise InputDataError(f"row {b['_row']} of {b['_file']} repeats row {a['_row']} of {a['_file']} (same "
                             f"normalised text, {a['text'][:40]!r}).", field=text_column,
                             fix="keep each prompt in one split's file only.")


def ingest_prompt_file(src: FileSource, run_seed: int = 0) -> pl.DataFrame:
    """Validate the prompt file(s), map their columns onto the prompts table and settle the splits:
    from a split column, from one file per split, or carved by prompt hash (tasks/data/splits.py).

    The frame keeps `_file` and `_row` so later checks can name a row, and `_labelled` (the row has a
    target, which the answer format later keeps on seed rows only); writing the table drops them."""
    from tasks.data.prompt_files import read_mapped

    frames = []
    for split, path in src.files().items():
        carved = src.splits is not None and split in (None, "train")
        part = read_mapped(src, path, None if carved else split)
        frames.append(part.with_columns(
            pl.col("answer").cast(pl.String) if "answer" in part.columns else pl.lit(None, pl.String).alias("answer"),
            pl.col("target").cast(pl.String) if "target" in part.columns else pl.lit(None, pl.String).alias("target"),
            *([] if "split" in part.columns else [pl.lit(None, pl.String).alias("split")]),
            source=pl.lit(f"file:{Path(path).name}")))
    out = pl.concat(frames, how="diagonal_relaxed")
    out = out.with_columns(stable_ids(out["text"]), _labelled=pl.col("target").is_not_null(),
                           *([] if "difficulty" in out.columns else [pl.lit(None, pl.Int32).alias("difficulty")]))
    _refuse_repeats(out, src.text_column)
    if src.splits is not None:
        from tasks.data.splits import carve

        out = carve(out, src.splits, run_seed, file=src.describe())
    return out


def check_no_leakage(prompts: pl.DataFrame, source: str = "prompts") -> None:
    """No held-out test prompt may appear, by normalised-text hash, in any other split."""
    is_test = (pl.col("split") == "test").fill_null(False)  # a row still to be carved is not test
    test_ids = prompts.filter(is_test)["prompt_id"]
    leaked = prompts.filter(~is_test & pl.col("prompt_id").is_in(test_ids.implode()))
    if leaked.height:
        where = ""
        if "_file" in prompts.columns:  # name the two rows
            a = leaked.row(0, named=True)
            b = prompts.filter(is_test & (pl.col("prompt_id") == a["prompt_id"])).row(0, named=True)
            where = f" (row {a['_row']} of {a['_file']} is test row {b['_row']} of {b['_file']})"
            source = a["_file"]
        raise InputDataError(f"{leaked.height} test prompt(s) also appear in training splits{where}.",
                             file=source, field="split", fix="remove them from the seed/train/probe splits.")


def source_name(src: ArithSource | FileSource | HubSource | MBPPSource) -> str:
    """What messages call the prompt source: its file(s), dataset, or the built-in generator."""
    if isinstance(src, FileSource):
        return src.describe()
    return getattr(src, "path", None) or getattr(src, "dataset", "prompts")


def prepare(recipe: Recipe, out_path: Path) -> Path:
    src = recipe.prompts.source
    if isinstance(src, ArithSource):
        df = build_arith_prompts(src, recipe.run.seed)
    elif isinstance(src, MBPPSource):
        from tasks.data.mbpp import mbpp_prompts

        df = mbpp_prompts(_read_prompt_file(src), src)
    elif isinstance(src, HubSource):
        from tasks.data.math_sources import load_hub_prompts

        df = load_hub_prompts(src)
    else:
        from tasks.data.math_sources import apply_answer_format

        df = apply_answer_format(ingest_prompt_file(src, recipe.run.seed), src.answer_format, source=src.describe())
    check_no_leakage(df, source_name(src))
    return write_table(df, out_path, PROMPTS)
