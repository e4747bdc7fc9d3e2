"""The data gate's Great Expectations suites, built in code from the schema module and `CheckConfig`.

Each table is validated as three small batches, so a 1M-row table stays fast:
- `<table>.schema`: one row per column with its Polars dtype. Polars is the source of truth (the
  pandas copy turns nullable ints into floats and nested `messages` into Python objects), so
  column presence and exact dtypes are checked there.
- `<table>.rows`: row-level expectations on a pandas copy of the flat columns only (ids not null,
  keys unique, value ranges, allowed values, text lengths).
- `<table>.aggregate`: one row of rates and counts computed with Polars in one pass (truncation,
  duplicates, missing answers, coverage, leaked test prompts, malformed chat messages), each
  validated against its `CheckConfig` threshold.
Row and aggregate checks on a column whose dtype is wrong are left out: the schema failure already
blocks the gate, and running them would only add confusing errors. The metrics dict is one more
batch (`metrics`), a one-row frame.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import polars as pl

from tasks.config.recipe import CheckConfig
from tasks.data.schema import ORIGINS, PAIRS, PROMPTS, SAMPLES, SCORED, SELECTED, SPLITS, Table

GATED_TABLES: dict[str, Table] = {t.name: t for t in (PROMPTS, SAMPLES, SCORED, SELECTED, PAIRS)}


@dataclass
class Batch:
    """One GX validation: a pandas frame, the suite's expectations, and context for failure lines."""

    name: str
    frame: pd.DataFrame
    expectations: list[Any]
    kind: str  # "schema" | "rows" | "aggregate" | "metrics"
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregate:
    """One cheap statistic of a table with its allowed range and the config field that sets it."""

    name: str
    expr: Callable[[], pl.Expr]
    needs: tuple[str, ...]
    lo: float | None = None
    hi: float | None = None
    setting: str | None = None  # CheckConfig field named in the failure line
    phrase: str | None = None   # for zero-tolerance counts: "{v} rows ..." instead of "x > max y"
    doc: str | None = None      # what the check guards, shown in Data Docs

    def describe(self) -> str:
        if self.setting:
            op, bound = ("≥", self.lo) if self.setting.startswith("min") else ("≤", self.hi)
            return f"{self.name} {op} {self.setting} ({bound})"
        return self.doc or f"{self.name} in [{self.lo}, {self.hi}]"


def _gx() -> Any:
    import great_expectations.expectations as gxe  # lazy: importing GX takes seconds

    return gxe


def good_columns(df: pl.DataFrame, table: Table) -> set[str]:
    """Columns present with exactly the schema's dtype: only these get row and aggregate checks."""
    return {c for c, t in table.columns.items() if c in df.columns and df.schema[c] == t}


def schema_batch(df: pl.DataFrame, table: Table) -> Batch:
    gxe = _gx()
    known = [c for c in df.columns if c in table.columns]
    frame = pd.DataFrame({"column": known, "dtype": [str(df.schema[c]) for c in known]}, dtype=object)
    expected = {c: str(t) for c, t in table.columns.items()}
    return Batch(f"{table.name}.schema", frame, [
        gxe.ExpectColumnDistinctValuesToContainSet(column="column", value_set=list(table.columns)),
        gxe.ExpectColumnPairValuesToBeInSet(column_A="column", column_B="dtype",
                                            value_pairs_set=[(c, t) for c, t in expected.items()]),
    ], "schema", {"expected_types": expected})


def _flat(dtype: pl.DataType) -> bool:
    return not isinstance(dtype, (pl.List, pl.Struct, pl.Array))


def row_batch(df: pl.DataFrame, table: Table, cfg: CheckConfig, ok: set[str]) -> Batch:
    """Row-level checks on the flat, correctly typed columns (nested ones go to the aggregate)."""
    gxe = _gx()
    cols = [c for c in table.columns if c in ok and _flat(table.columns[c])]
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in cols if c not in table.nullable]
    if table is PROMPTS:
        if "prompt_id" in ok:
            exps.append(gxe.ExpectColumnValuesToBeUnique(column="prompt_id"))
    elif all(k in ok for k in table.key):
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(table.key)))
    finite = sys.float_info.max
    # an injected reference solution (calibrate.inject_reference train) is selected as sample_idx -1
    first_idx = -1 if table is SELECTED and "origin" in df.columns and (df["origin"] == "reference").any() else 0
    ranges = {"sample_idx": (first_idx, None), "chosen_idx": (0, None), "rejected_idx": (0, None),
              "n_tokens": (0, None), "temperature": (0.0, None),
              "score": (-finite, finite), "reward": (-1.0, 1.0)}
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi)
             for c, (lo, hi) in ranges.items() if c in cols]
    allowed = {"finish_reason": ["length", "stop"], "split": list(SPLITS)}
    exps += [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=v) for c, v in allowed.items() if c in cols]
    if table in (SAMPLES, SCORED) and "text" in cols:
        exps.append(gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=cfg.min_text_chars, max_value=cfg.max_text_chars))
    if "origin" in table.optional and "origin" in df.columns:  # the hint pass is on (absent: the suite as before)
        cols = [*cols, "origin"]
        exps += [gxe.ExpectColumnValuesToNotBeNull(column="origin"),
                 gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS))]
    frame = df.select(cols).to_pandas() if cols else pd.DataFrame(index=range(df.height))
    return Batch(f"{table.name}.rows", frame, exps, "rows")


def _rate(pred: pl.Expr) -> pl.Expr:
    return pred.cast(pl.Float64).mean().fill_null(0.0)


def _turn_ok(role: str) -> pl.Expr:
    """Row has a `role` turn whose content is not blank (null messages count as not ok)."""
    el = pl.element()
    return (pl.col("messages").list.eval((el.struct.field("role") == role)
                                         & (el.struct.field("content").str.strip_chars().str.len_chars() > 0))
            .list.any().fill_null(False))


def _assistant_len_ok(lo: int, hi: int) -> pl.Expr:
    el = pl.element()
    n = el.struct.field("content").str.len_chars()
    bad = (el.struct.field("role") == "assistant") & ((n < lo) | (n > hi))
    return ~pl.col("messages").list.eval(bad).list.any().fill_null(False)


def leaked(table: Table, test_ids: list[str]) -> pl.Expr:
    """Training rows whose prompt_id (normalised-text hash) is a held-out test prompt's."""
    hit = pl.col("prompt_id").is_in(test_ids)
    return (pl.col("split") != "test") & hit if table is PROMPTS else hit


def _blank(col: str) -> pl.Expr:
    return pl.col(col).is_null() | (pl.col(col).str.strip_chars().str.len_chars() == 0)


def aggregates(table: Table, cfg: CheckConfig, test_ids: list[str], min_margin: float = 0.0) -> list[Aggregate]:
    """The table's gate statistics. Rates are over rows; coverage is over prompts."""
    leak = Aggregate("leaked_rows", lambda: leaked(table, test_ids).sum(), ("prompt_id",),
                     hi=0, phrase="{v} row(s) from held-out test prompts (leakage), e.g. {leaked}",
                     doc="no row comes from a held-out test prompt (by normalised-text hash)")
    if table is PROMPTS:
        return [Aggregate("leaked_rows", lambda: leaked(table, test_ids).sum(), ("prompt_id", "split"), hi=0,
                          phrase="{v} non-test prompt(s) are held-out test prompts (leakage), e.g. {leaked}",
                          doc="no seed/train/probe prompt is a held-out test prompt")]
    if table is PAIRS:  # DPO cannot train on no pairs (SFT at least has the seed set), so at least one
        return [
            Aggregate("n_rows", pl.len, (), lo=max(1, cfg.min_selected), setting="min_selected"),
            Aggregate("same_text_pairs", lambda: (pl.col("chosen") == pl.col("rejected")).sum(), ("chosen", "rejected"),
                      hi=0, phrase="{v} pair(s) whose chosen text equals the rejected one",
                      doc="chosen differs from rejected in every pair"),
            Aggregate("blank_pairs", lambda: (_blank("chosen") | _blank("rejected") | _blank("prompt")).sum(),
                      ("prompt", "chosen", "rejected"), hi=0,
                      phrase="{v} pair(s) with an empty prompt, chosen or rejected text",
                      doc="prompt, chosen and rejected are non-empty"),
            Aggregate("below_margin_pairs", lambda: (pl.col("margin") < min_margin - 1e-9).sum(), ("margin",), hi=0,
                      phrase=f"{{v}} pair(s) with a margin below select.pairs.min_margin {min_margin:g}",
                      doc=f"every margin is at least select.pairs.min_margin ({min_margin:g})"),
            Aggregate("bad_length_rows", lambda: (~(pl.col("chosen").str.len_chars().is_between(
                cfg.min_text_chars, cfg.max_text_chars) & pl.col("rejected").str.len_chars().is_between(
                cfg.min_text_chars, cfg.max_text_chars))).sum(), ("chosen", "rejected"), hi=0,
                      phrase=f"{{v}} pair(s) with a text outside [{cfg.min_text_chars}, {cfg.max_text_chars}] chars",
                      doc="chosen and rejected within min_text_chars..max_text_chars"),
            leak,
        ]
    if table is SELECTED:
        return [
            Aggregate("n_rows", pl.len, (), lo=cfg.min_selected, setting="min_selected"),
            Aggregate("bad_messages", lambda: (~(_turn_ok("user") & _turn_ok("assistant"))).sum(),
                      ("messages",), hi=0, phrase="{v} row(s) lack a non-empty user and assistant turn",
                      doc="every example has a non-empty user and assistant turn"),
            Aggregate("bad_length_rows", lambda: (~_assistant_len_ok(cfg.min_text_chars, cfg.max_text_chars)).sum(),
                      ("messages",), hi=0,
                      phrase=f"{{v}} row(s) with an assistant turn outside "
                             f"[{cfg.min_text_chars}, {cfg.max_text_chars}] chars",
                      doc="assistant turns within min_text_chars..max_text_chars"),
            leak,
        ]
    out = [
        Aggregate("n_rows", pl.len, (), lo=1, phrase="table is empty", doc="table is not empty"),
        Aggregate("truncation_rate", lambda: _rate(pl.col("finish_reason") == "length"), ("finish_reason",),
                  hi=cfg.max_truncation_rate, setting="max_truncation_rate"),
        Aggregate("duplicate_rate", lambda: _rate(pl.len().over("prompt_id", "text") > 1), ("prompt_id", "text"),
                  hi=cfg.max_duplicate_rate, setting="max_duplicate_rate"),
        leak,
    ]
    if table is SCORED:
        ans = pl.col("extracted_answer")
        out += [
            Aggregate("missing_answer_rate", lambda: _rate(ans.is_null() | (ans.str.strip_chars() == "")),
                      ("extracted_answer",), hi=cfg.max_missing_answer_rate, setting="max_missing_answer_rate"),
            Aggregate("coverage", lambda: (pl.col("prompt_id").filter(pl.col("correct")).n_unique()
                                           / pl.col("prompt_id").n_unique()).fill_nan(0.0).fill_null(0.0),
                      ("prompt_id", "correct"), lo=cfg.min_coverage, setting="min_coverage"),
            Aggregate("distinct_correct_ratio",
                      lambda: (pl.struct("prompt_id", "text").filter(pl.col("correct")).n_unique()
                               / pl.col("correct").sum()).fill_nan(0.0).fill_null(0.0),
                      ("prompt_id", "text", "correct"), lo=cfg.min_distinct_correct_ratio,
                      setting="min_distinct_correct_ratio"),
        ]
    return out


def aggregate_batch(df: pl.DataFrame, table: Table, cfg: CheckConfig, ok: set[str],
                    test_ids: list[str], min_margin: float = 0.0) -> Batch:
    """One Polars pass over the table, validated as a one-row frame (fast on big tables)."""
    gxe = _gx()
    checks = [a for a in aggregates(table, cfg, test_ids, min_margin) if all(c in ok for c in a.needs)]
    row = df.select([a.expr().alias(a.name) for a in checks]).row(0, named=True) if checks else {}
    frame = pd.DataFrame({k: [float(v) if isinstance(v, float) else int(v)] for k, v in row.items()})
    notes: dict[str, Any] = {"checks": {a.name: a for a in checks}}
    if row.get("leaked_rows"):
        notes["leaked"] = sorted(df.filter(leaked(table, test_ids))["prompt_id"].unique().to_list())[:5]
    fields = CheckConfig.model_fields
    exps = [gxe.ExpectColumnValuesToBeBetween(
        column=a.name, min_value=a.lo, max_value=a.hi, description=a.describe(),
        notes=fields[a.setting].description if a.setting else None) for a in checks]
    return Batch(f"{table.name}.aggregate", frame, exps, "aggregate", notes)


def metrics_checks(cfg: CheckConfig) -> dict[str, tuple[float | None, float | None, str | None]]:
    """Required metric -> (min, max, CheckConfig field setting the binding bound)."""
    return {
        "coverage": (cfg.min_coverage, 1.0, "min_coverage"),
        "distinct_correct_ratio": (cfg.min_distinct_correct_ratio, 1.0, "min_distinct_correct_ratio"),
        "balance_score": (cfg.min_balance_score, 1.0, "min_balance_score"),
        "repetition_rate": (0.0, cfg.max_repetition_rate, "max_repetition_rate"),
        "truncation_rate": (0.0, cfg.max_truncation_rate, "max_truncation_rate"),
        "n_selected": (cfg.min_selected, None, "min_selected"),
        "pass@1": (0.0, 1.0, None),
        "n_prompts": (0, None, None),
        "n_samples": (0, None, None),
    }


def vote_checks(cfg: CheckConfig) -> dict[str, tuple[float | None, float | None, str | None]]:
    """Metrics of a majority-vote iteration (present only then) -> (min, max, CheckConfig field)."""
    return {
        "pseudo_label_coverage": (cfg.min_pseudo_label_coverage, 1.0, "min_pseudo_label_coverage"),
        "pseudo_label_agreement": (cfg.min_pseudo_label_agreement, 1.0, "min_pseudo_label_agreement"),
    }


def metrics_batch(metrics: dict, cfg: CheckConfig) -> Batch:
    """The metrics dict as a one-row frame: required keys, numeric types, no NaN, thresholds."""
    gxe = _gx()
    checks = metrics_checks(cfg)
    if "pseudo_label_coverage" in metrics:  # a majority-vote iteration: its gate bounds too
        checks |= vote_checks(cfg)
    scalars = {k: v for k, v in metrics.items() if v is None or isinstance(v, (numbers.Number, str))}
    frame = pd.DataFrame({k: [v] for k, v in scalars.items()})
    exps: list[Any] = [gxe.ExpectTableColumnsToMatchSet(column_set=list(checks), exact_match=False)]
    numeric = ["int64", "float64", "int32", "float32"]
    for key, (lo, hi, _) in checks.items():
        if key not in scalars:
            continue
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=key))
        exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=key, type_list=numeric))
        value = scalars[key]
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=key, min_value=lo, max_value=hi))
    return Batch("metrics", frame, exps, "metrics", {"settings": {k: v[2] for k, v in checks.items()}})


def table_batches(df: pl.DataFrame, table: Table, cfg: CheckConfig, test_ids: list[str],
                  min_margin: float = 0.0) -> list[Batch]:
    ok = good_columns(df, table)
    return [schema_batch(df, table), row_batch(df, table, cfg, ok),
            aggregate_batch(df, table, cfg, ok, test_ids, min_margin)]
