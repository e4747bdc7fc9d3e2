"""Carve seed, probe and test splits out of prompts that carry none, stably as rows are added.

Each prompt gets a position u in [0, 2^52): the first 13 hex digits of sha256("<run seed>/carve/<prompt_id>").
prompt_id is itself a hash of the normalised text, so u depends on the prompt and the run seed only.
- Shares are fixed intervals of u, in the order test, probe, seed. Membership is a property of the
  prompt alone: rows added later are placed, and no existing prompt moves.
- Counts (probe and seed only) take the n lowest u among the rows no share took, probe first.
  Exact counts cannot also be stable: with a count of 1, the files {a} and {b} must give a and b,
  and then {a, b} cannot keep both. Here an added row with a low u can push a counted prompt on to
  the next split (probe to seed, seed to train); a row of train never moves into a carved split.
- Seed takes only rows with a target (the warm-up fine-tunes on it); a row without one that falls
  in seed's interval goes to train.
"""

from __future__ import annotations

import hashlib

import duckdb
import polars as pl

from tasks.errors import InputDataError

SPACE = 1 << 52  # 13 hex digits
ORDER = ("test", "probe", "seed")


def positions(prompt_ids: pl.Series, run_seed: int) -> pl.Series:
    """u for each prompt id (DuckDB's sha256, vectorised; row order kept)."""
    frame = pl.DataFrame({"p": prompt_ids})
    hexes = duckdb.sql(f"SELECT substr(sha256('{int(run_seed)}/carve/' || p), 1, 13) AS h FROM frame").pl()["h"]
    return hexes.str.to_integer(base=16).alias("_u")


def carve(df: pl.DataFrame, spec: dict[str, float | int], run_seed: int, *, file: str) -> pl.DataFrame:
    """Fill the null `split` values of `df` (prompt_id, target, split) from `spec`; the rest is train."""
    df = df.with_columns(positions(df["prompt_id"], run_seed))
    open_ = pl.col("split").is_null()
    labelled = pl.col("target").is_not_null()
    low = 0
    for name in ORDER:  # shares: a fixed interval of u each
        share = spec.get(name)
        if isinstance(share, float) and share > 0:
            high = low + round(share * SPACE)
            inside = open_ & (pl.col("_u") >= low) & (pl.col("_u") < high) & (labelled if name == "seed" else True)
            df = df.with_columns(split=pl.when(inside).then(pl.lit(name)).otherwise("split"))
            low = high
    for name in ("probe", "seed"):  # counts: the lowest u among the rows left
        count = spec.get(name)
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            pool = df.filter(open_ & (labelled if name == "seed" else True))
            if pool.height < count:
                what = "rows with a target" if name == "seed" else "rows"
                raise InputDataError(f"splits.{name} asks for {count} prompts, but only {pool.height} {what} are "
                                     "left after the other splits.", file=file, field=f"prompts.source.splits.{name}",
                                     fix=f"ask for at most {pool.height}, or add rows.")
            taken = pool.sort("_u", "prompt_id").head(count)["prompt_id"].implode()
            df = df.with_columns(split=pl.when(open_ & pl.col("prompt_id").is_in(taken)).then(pl.lit(name))
                                 .otherwise("split"))
    return df.with_columns(split=pl.col("split").fill_null("train")).drop("_u")


def assignment_hash(prompts: pl.DataFrame) -> str:
    """sha256 of the split assignment: the sorted "prompt_id split" lines of a prompts table."""
    lines = prompts.select(pl.concat_str("prompt_id", pl.lit(" "), "split").alias("l")).sort("l")["l"]
    return hashlib.sha256(lines.str.join("\n").item().encode()).hexdigest()
