"""The one place that defines every table's columns, types and sort keys.

Tables are written sorted by their key with fixed Parquet settings, so the same rows
always give the same bytes (and so the same DVC hash).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from tasks.errors import InputDataError

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, pl.DataType]
    key: tuple[str, ...]
    nullable: frozenset[str] = frozenset()
    # Written after the required columns, and only when the frame has them: a feature that is off
    # (e.g. the hint pass) leaves the table's bytes exactly as they were before it existed.
    optional: dict[str, pl.DataType] = field(default_factory=dict)

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema(self.columns)


SAMPLE_COLUMNS: dict[str, pl.DataType] = {
    "prompt_id": pl.String, "sample_idx": pl.Int32, "iteration": pl.String, "text": pl.String,
    "n_tokens": pl.Int32, "finish_reason": pl.String, "temperature": pl.Float64, "seed": pl.Int64,
    "model_hash": pl.String, "pass_name": pl.String,
}

PROMPTS = Table("prompts", {
    "prompt_id": pl.String, "text": pl.String, "answer": pl.String, "split": pl.String,
    "source": pl.String, "difficulty": pl.Int32, "target": pl.String,
}, key=("split", "prompt_id"), nullable=frozenset({"answer", "difficulty", "target"}))

# With the hint pass on (hints.enabled): where a sample came from (self: the first pass; rationalized:
# the gold-answer hint; hinted: a partial solution or a Socratic question), the hint's kind and text.
ORIGIN_COLUMNS: dict[str, pl.DataType] = {"origin": pl.String, "hint_kind": pl.String, "hint": pl.String}
ORIGINS = ("self", "rationalized", "hinted")

SAMPLES = Table("samples", SAMPLE_COLUMNS, key=("prompt_id", "sample_idx"),
                nullable=frozenset({"hint_kind", "hint"}), optional=ORIGIN_COLUMNS)

SCORED = Table("scored", {
    **SAMPLE_COLUMNS, "correct": pl.Boolean, "reward": pl.Float64, "score": pl.Float64,
    "extracted_answer": pl.String,
}, key=("prompt_id", "sample_idx"), nullable=frozenset({"extracted_answer", "reward", "hint_kind", "hint"}),
    optional=ORIGIN_COLUMNS)

# The probe set's samples at every calibration temperature, scored as the choice saw them (under
# calibrate.fidelity reference: the reference code's candidates and scores), so a calibration choice can be
# audited from the workspace alone. Empty when calibration is off.
PROBE = Table("probe", {**SCORED.columns, "temperature": pl.Float64}, key=("temperature", "prompt_id", "sample_idx"),
              nullable=SCORED.nullable, optional=ORIGIN_COLUMNS)

SELECTED = Table("selected", {
    "prompt_id": pl.String, "sample_idx": pl.Int32, "messages": pl.List(MESSAGE), "score": pl.Float64,
    "origin": pl.String,
}, key=("origin", "prompt_id", "sample_idx"))

# select mode `pairs`: a preference pair per row; margin = chosen's value minus rejected's (score or vote share)
PAIRS = Table("pairs", {
    "prompt_id": pl.String, "prompt": pl.String, "chosen": pl.String, "rejected": pl.String,
    "chosen_idx": pl.Int32, "rejected_idx": pl.Int32, "margin": pl.Float64,
}, key=("prompt_id", "chosen_idx", "rejected_idx"))

# reward source `judge`: the policy's verdict on each sample (empty when the judge is off)
JUDGED = Table("judged", {
    "prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String, "judge_score": pl.Int32,
    "n_tokens": pl.Int32, "finish_reason": pl.String, "seed": pl.Int64, "model_hash": pl.String,
}, key=("prompt_id", "sample_idx"), nullable=frozenset({"judge_score"}))

CALIBRATION = Table("calibration", {
    "temperature": pl.Float64, "threshold": pl.Float64, "balance_score": pl.Float64, "pass_at_k": pl.Float64,
    "distinct_ratio": pl.Float64, "n_selected": pl.Int64, "chosen": pl.Boolean,
}, key=("temperature", "threshold"),
    nullable=frozenset({"balance_score", "pass_at_k", "distinct_ratio", "n_selected"}))

# The same grid when a B-STaR reference-code option (calibrate.average_over, threshold_from,
# inject_reference) is not its default: the options and the prompt counts behind each mean are
# recorded beside it. A separate table so the default recipe's calibration.parquet keeps its bytes.
# set: probe (calibrate) or full (the re-sweep in select, calibration_full.parquet).
CALIBRATION_OPTIONS = Table("calibration", {
    **CALIBRATION.columns, "set": pl.String, "average_over": pl.String, "threshold_from": pl.String,
    "inject_reference": pl.String, "n_prompts": pl.Int64, "n_prompts_selected": pl.Int64,
}, key=("temperature", "threshold"), nullable=CALIBRATION.nullable)

# Adaptive K (tasks/sampling/allocation.py): why each pool prompt got its number of samples. Written by
# generate wherever the workspace's dvc.yaml declares it; uniform (k = generate.k) when allocation is off.
# reason: uniform, history, prior, k_min, k_max; the evidence (prev_*, prior_p, p_hat) is null where none
# was used; prior_from: difficulty (the rate at the prompt's difficulty) or overall; gain_cutoff: the
# iteration's smallest marginal gain that got a sample; budget: samples of the iteration, hint pass
# included. k_hint and the hint columns are filled by the hint pass.
ALLOCATION = Table("allocation", {
    "prompt_id": pl.String, "iteration": pl.String, "difficulty": pl.Int32, "k": pl.Int32, "k_hint": pl.Int32,
    "reason": pl.String, "prev_iteration": pl.String, "prev_n": pl.Int32, "prev_c": pl.Int32,
    "prior_p": pl.Float64, "prior_from": pl.String, "p_hat": pl.Float64, "gain_cutoff": pl.Float64,
    "budget": pl.Int64, "first_pass_correct": pl.Int32, "hint_kind": pl.String, "hint_reason": pl.String,
}, key=("prompt_id",), nullable=frozenset({"difficulty", "prev_iteration", "prev_n", "prev_c", "prior_p",
                                           "prior_from", "p_hat", "gain_cutoff", "first_pass_correct", "hint_kind",
                                           "hint_reason"}))

TABLES = {t.name: t for t in (PROMPTS, SAMPLES, SCORED, PROBE, SELECTED, PAIRS, JUDGED, CALIBRATION, ALLOCATION)}
SPLITS = ("seed", "train", "probe", "test")


def conform(df: pl.DataFrame, table: Table) -> pl.DataFrame:
    """Select, cast and sort `df` to `table`'s schema (its optional columns where `df` has them);
    raise on missing columns or nulls."""
    missing = [c for c in table.columns if c not in df.columns]
    if missing:
        raise InputDataError(f"{table.name} table lacks column(s) {missing}.", field=",".join(missing),
                             fix=f"provide columns {list(table.columns)}.")
    written = {**table.columns, **{c: t for c, t in table.optional.items() if c in df.columns}}
    out = df.select([pl.col(c).cast(t, strict=True) for c, t in written.items()])
    required = [c for c in written if c not in table.nullable]
    nulls = out.select(pl.col(required).null_count()).row(0, named=True)
    bad = [c for c, n in nulls.items() if n]
    if bad:
        raise InputDataError(f"{table.name} table has nulls in {bad}.", field=",".join(bad),
                             fix="fill or drop those rows.")
    return out.sort(list(table.key))


def write_table(df: pl.DataFrame, path: str | Path, table: Table) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a partial table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = conform(df, table)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    out.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True,
                      row_group_size=65536)
    os.replace(tmp, path)
    return path


def read_table(path: str | Path, table: Table) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputDataError("file not found.", file=str(path), fix="run the stage that produces it.")
    df = pl.read_parquet(path)
    return conform(df, table)


def with_origin(df: pl.DataFrame) -> pl.DataFrame:
    """`df` with an origin column: a table written with the hint pass off has none, and all its rows are `self`."""
    return df if "origin" in df.columns else df.with_columns(origin=pl.lit("self"))


def stable_ids(texts: pl.Series) -> pl.Series:
    """prompt_id: the first 16 hex digits of sha256 over the normalised text (DuckDB, vectorised)."""
    frame = pl.DataFrame({"t": texts})
    ids = duckdb.sql(
        "SELECT substr(sha256(lower(trim(regexp_replace(t, '\\s+', ' ', 'g')))), 1, 16) AS id FROM frame"
    ).pl()["id"]
    return ids.alias("prompt_id")
