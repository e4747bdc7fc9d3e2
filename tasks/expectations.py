"""Great Expectations data gate: validate an iteration's tables and metrics before training.

`validate_tables` runs every suite from `tasks.expectation_suites` in a fresh ephemeral GX
context (nothing persists between calls, no network, no analytics, no progress bars), collects
every failure as one short line, and optionally renders GX Data Docs (HTML) into a folder.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from tasks.config import CheckConfig
from tasks.expectation_suites import GATED_TABLES, Batch, good_columns, metrics_batch, table_batches
from tasks.schema import PROMPTS

DOCS_SITE = "flywheel_gate"


def _context(docs_dir: Path | None) -> Any:
    """A quiet ephemeral context; with `docs_dir`, a filesystem Data Docs site writing there."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # lazy: importing GX takes seconds
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.config.analytics_enabled = False
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(site_name=DOCS_SITE, site_config={
            "class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    return ctx


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _bounds(lo: Any, hi: Any) -> str:
    return f"[{'-inf' if lo is None else _num(lo)}, {'inf' if hi is None else _num(hi)}]"


def _threshold_line(name: str, value: Any, lo: Any, hi: Any, setting: str | None) -> str:
    """'truncation_rate 0.97 > max_truncation_rate 0.9' style, naming the config field when known."""
    if hi is not None and isinstance(value, (int, float)) and value > hi:
        label = setting if setting and setting.startswith("max") else "max"
        return f"{name} {_num(value)} > {label} {_num(hi)}"
    if lo is not None and isinstance(value, (int, float)) and value < lo:
        label = setting if setting and setting.startswith("min") else "min"
        return f"{name} {_num(value)} < {label} {_num(lo)}"
    return f"{name} {_num(value)} outside {_bounds(lo, hi)}"


def _describe(batch: Batch, res: Any) -> str:
    """One human-readable line for a failed expectation result."""
    cfg = res.expectation_config
    kw, r = cfg.kwargs, res.result or {}
    kind, col = cfg.type, kw.get("column")
    examples = r.get("partial_unexpected_list") or []
    count = r.get("unexpected_count")
    if res.exception_info and res.exception_info.get("raised_exception"):
        msg = str(res.exception_info.get("exception_message", "")).strip().splitlines()[:1]
        return f"{kind}({col or ''}) could not run: {msg[0] if msg else 'error'}"[:240]
    if kind == "expect_column_distinct_values_to_contain_set":
        return f"missing column(s) {sorted(set(kw['value_set']) - set(r.get('observed_value') or []))}"
    if kind == "expect_column_pair_values_to_be_in_set":
        want = batch.notes["expected_types"]
        return "wrong dtype: " + ", ".join(f"{c} is {t} (expected {want.get(c)})" for c, t in examples)
    if kind == "expect_table_columns_to_match_set":
        return f"missing key(s) {sorted(set(kw['column_set']) - set(r.get('observed_value') or []))}"
    if kind == "expect_column_values_to_be_in_type_list":
        return f"{col} has type {r.get('observed_value')}, expected a number"
    if kind == "expect_column_values_to_not_be_null":
        return f"{col} has {count} null value(s)"
    if kind == "expect_column_values_to_be_unique":
        return f"{col} is not unique: {count} row(s) share a value, e.g. {examples[:3]}"
    if kind == "expect_compound_columns_to_be_unique":
        keys = [tuple(e.values()) if isinstance(e, dict) else e for e in examples[:3]]
        return f"duplicate key ({', '.join(kw['column_list'])}): {count} row(s), e.g. {keys}"
    if kind == "expect_column_values_to_be_in_set":
        return f"{col} has {count} value(s) not in {sorted(kw['value_set'])}, e.g. {sorted(set(examples))[:3]}"
    if kind == "expect_column_value_lengths_to_be_between":
        return f"{col} has {count} value(s) with length outside {_bounds(kw.get('min_value'), kw.get('max_value'))}"
    if kind == "expect_column_values_to_be_between":
        if batch.kind == "aggregate":
            agg = batch.notes["checks"][col]
            value = batch.frame[col].iloc[0].item()
            if agg.phrase:
                return agg.phrase.format(v=value, leaked=batch.notes.get("leaked", []))
            return _threshold_line(col, value, agg.lo, agg.hi, agg.setting)
        if batch.kind == "metrics":
            value = batch.frame[col].iloc[0]
            return _threshold_line(col, getattr(value, "item", lambda: value)(), kw.get("min_value"),
                                   kw.get("max_value"), batch.notes["settings"].get(col))
        return (f"{col} has {count} value(s) outside {_bounds(kw.get('min_value'), kw.get('max_value'))}, "
                f"e.g. {examples[:3]}")
    return f"{kind}({col or ''}) failed: {r.get('observed_value', r)}"[:240]


def _test_ids(tables: dict[str, pl.DataFrame], test_prompt_ids: list[str]) -> list[str]:
    """Held-out ids: those given, plus the prompts table's own test split when it is validated."""
    ids = set(test_prompt_ids)
    prompts = tables.get("prompts")
    if prompts is not None and {"prompt_id", "split"} <= good_columns(prompts, PROMPTS):
        ids.update(prompts.filter(pl.col("split") == "test")["prompt_id"].drop_nulls().to_list())
    return sorted(ids)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap a freshly built docs folder into place, refusing to delete a folder that isn't Data Docs."""
    if final.exists():
        if any(final.iterdir()) and not (final / "index.html").is_file():
            raise FileExistsError(f"{final} exists and is not a Data Docs folder; not replacing it")
        shutil.rmtree(final)
    tmp.rename(final)


def validate_tables(*, tables: dict[str, pl.DataFrame], metrics: dict | None, test_prompt_ids: list[str],
                    cfg: CheckConfig, docs_dir: Path | None = None,
                    run_time: dt.datetime | None = None) -> dict:
    """Run the gate's suites on `tables` (any of prompts/samples/scored/selected) and `metrics`.

    Every failure is collected (the gate never stops at the first). With `docs_dir` and
    `cfg.data_docs`, GX Data Docs are written there; `data_docs` in the result is the index page's
    path relative to docs_dir's parent (so a gate.json written beside the folder can link it).
    `run_time` stamps the validation results (default: now, UTC).
    """
    unknown = sorted(set(tables) - set(GATED_TABLES))
    if unknown:
        raise ValueError(f"no gate suites for table(s) {unknown}; expected some of {sorted(GATED_TABLES)}")
    test_ids = _test_ids(tables, test_prompt_ids)
    batches: list[Batch] = []
    for name, table in GATED_TABLES.items():
        if name in tables:
            batches += table_batches(tables[name], table, cfg, test_ids)
    if metrics is not None:
        batches.append(metrics_batch(metrics, cfg))

    docs_dir = Path(docs_dir) if docs_dir is not None and cfg.data_docs else None
    build_dir = docs_dir.with_name(f".{docs_dir.name}.tmp-{os.getpid()}") if docs_dir else None
    if build_dir is not None and build_dir.exists():
        shutil.rmtree(build_dir)
    ctx = _context(build_dir)
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    run_id = RunIdentifier(run_name="gate", run_time=run_time or dt.datetime.now(dt.timezone.utc))
    source = ctx.data_sources.add_pandas("flywheel")
    failures: list[str] = []
    suites: dict[str, dict] = {}
    for batch in batches:
        definition = source.add_dataframe_asset(batch.name).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=batch.name, expectations=batch.expectations))
        order = {e.id: i for i, e in enumerate(suite.expectations)}
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=batch.name, data=definition, suite=suite))
        result = vd.run(batch_parameters={"dataframe": batch.frame}, run_id=run_id)
        stats = result.statistics
        suites[batch.name] = {"success": bool(result.success), "evaluated": int(stats["evaluated_expectations"]),
                              "failed": int(stats["unsuccessful_expectations"])}
        failed = [r for r in result.results if not r.success]
        failed.sort(key=lambda r: order.get(r.expectation_config.id, len(order)))
        table = batch.name.split(".")[0]
        failures += [f"{table}: {_describe(batch, r)}" for r in failed]

    docs_index = None
    if docs_dir is not None and build_dir is not None:
        ctx.build_data_docs(site_names=[DOCS_SITE])
        _replace_dir(build_dir, docs_dir)
        docs_index = (Path(docs_dir.name) / "index.html").as_posix()
    return {"passed": not failures and all(s["success"] for s in suites.values()),
            "failures": failures, "suites": suites, "data_docs": docs_index}
