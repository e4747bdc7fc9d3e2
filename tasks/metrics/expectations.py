"""Great Expectations data gate: validate an iteration's tables and metrics before training.

`validate_tables` runs every suite from `tasks.metrics.expectation_suites` in a fresh ephemeral GX
context (nothing persists between calls, no network, no analytics, no progress bars), collects
every failure as one short line, and optionally renders GX Data Docs (HTML) into a folder.
"""

from __future__ import annotations

import datetime as dt
import html
import numbers
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import polars as pl

from tasks.config.recipe import CheckConfig
from tasks.data.schema import PROMPTS
from tasks.metrics.expectation_suites import GATED_TABLES, Batch, good_columns, metrics_batch, table_batches

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
    if hi is not None and isinstance(value, numbers.Real) and value > hi:
        label = setting if setting and setting.startswith("max") else "max"
        return f"{name} {_num(value)} > {label} {_num(hi)}"
    if lo is not None and isinstance(value, numbers.Real) and value < lo:
        label = setting if setting and setting.startswith("min") else "min"
        return f"{name} {_num(value)} < {label} {_num(lo)}"
    return f"{name} {_num(value)} outside {_bounds(lo, hi)}"


def _describe(batch: Batch, res: Any) -> str:
    """One human-readable line for a failed expectation result."""
    conf = res.expectation_config
    kw, r = conf.kwargs, res.result or {}
    kind, col = conf.type, kw.get("column")
    examples = r.get("partial_unexpected_list") or []
    count = r.get("unexpected_count")
    if res.exception_info and res.exception_info.get("raised_exception"):
        msg = str(res.exception_info.get("exception_message", "")).strip().splitlines()[:1]
        return f"{kind}({col or ''}) could not run: {msg[0] if msg else 'error'}"[:240]
    if kind == "expect_column_distinct_values_to_contain_set":
        missing = r.get("partial_missing_list") or sorted(set(kw["value_set"]) - set(r.get("observed_value") or []))
        return f"missing column(s) {sorted(missing)}"
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
        if kw.get("min_value") == -sys.float_info.max and kw.get("max_value") == sys.float_info.max:
            return f"{col} has {count} non-finite value(s), e.g. {examples[:3]}"
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
                    run_time: dt.datetime | None = None, min_margin: float = 0.0) -> dict:
    """Run the gate's suites on `tables` (any of prompts/samples/scored/selected) and `metrics`.

    Every failure is collected (the gate never stops at the first). With `docs_dir` and
    `cfg.data_docs`, GX Data Docs are written there; `data_docs` in the result is the index page's
    path relative to docs_dir's parent (so a gate.json written beside the folder can link it).
    `run_time` stamps the validation results (default: now, UTC). `min_margin` is the pairs table's
    least allowed margin (select.pairs.min_margin).
    """
    unknown = sorted(set(tables) - set(GATED_TABLES))
    if unknown:
        raise ValueError(f"no gate suites for table(s) {unknown}; expected some of {sorted(GATED_TABLES)}")
    test_ids = _test_ids(tables, test_prompt_ids)
    batches: list[Batch] = []
    for name, table in GATED_TABLES.items():
        if name in tables:
            batches += table_batches(tables[name], table, cfg, test_ids, min_margin)
    if metrics is not None:
        batches.append(metrics_batch(metrics, cfg))

    docs_dir = Path(docs_dir) if docs_dir is not None and cfg.data_docs else None
    build_dir = docs_dir.with_name(f".{docs_dir.name}.tmp-{os.getpid()}") if docs_dir else None
    if build_dir is not None:
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = _run(batches, build_dir, run_time)
        if docs_dir is not None and build_dir is not None:
            _replace_dir(build_dir, docs_dir)
            result["data_docs"] = (Path(docs_dir.name) / "index.html").as_posix()
    finally:
        if build_dir is not None:
            shutil.rmtree(build_dir, ignore_errors=True)
    return result


def _run(batches: list[Batch], docs_dir: Path | None, run_time: dt.datetime | None) -> dict:
    """Validate each batch against its suite in one ephemeral context; build Data Docs if asked."""
    ctx = _context(docs_dir)
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
        validation = vd.run(batch_parameters={"dataframe": batch.frame}, run_id=run_id)
        stats = validation.statistics
        suites[batch.name] = {"success": bool(validation.success),
                              "evaluated": int(stats["evaluated_expectations"]),
                              "failed": int(stats["unsuccessful_expectations"])}
        failed = [r for r in validation.results if not r.success]
        failed.sort(key=lambda r: order.get(r.expectation_config.id, len(order)))
        table = batch.name.split(".")[0]
        failures += [f"{table}: {_describe(batch, r)}" for r in failed]

    result = {"passed": not failures and all(s["success"] for s in suites.values()),
              "failures": failures, "suites": suites, "data_docs": None}
    if docs_dir is not None:
        ctx.build_data_docs(site_names=[DOCS_SITE])
        _write_summary(docs_dir, result)
    return result


def _write_summary(docs_dir: Path, result: dict) -> None:
    """summary.html beside GX's index: plain HTML that reads offline (GX's index lists its pages
    with JavaScript from CDNs), linking each suite's GX validation page."""
    rows = []
    for name, s in result["suites"].items():
        pages = sorted((docs_dir / "validations").rglob(f"*-{name}.html"))
        link = html.escape(pages[-1].relative_to(docs_dir).as_posix()) if pages else ""
        label = f'<a href="{link}">{html.escape(name)}</a>' if link else html.escape(name)
        rows.append(f"<tr><td>{label}</td><td>{'pass' if s['success'] else 'FAIL'}</td>"
                    f"<td>{s['evaluated']}</td><td>{s['failed']}</td></tr>")
    items = "".join(f"<li>{html.escape(f)}</li>" for f in result["failures"]) or "<li>none</li>"
    verdict = "PASSED" if result["passed"] else "FAILED"
    (docs_dir / "summary.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>Data gate {verdict}</title>"
        f"<h1>Data gate {verdict}</h1><h2>Failures</h2><ul>{items}</ul>"
        f"<h2>Suites</h2><table border='1' cellpadding='4'><tr><th>suite</th><th>result</th>"
        f"<th>evaluated</th><th>failed</th></tr>{''.join(rows)}</table>"
        f"<p>Full GX Data Docs: <a href='index.html'>index.html</a></p>\n", encoding="utf-8")
