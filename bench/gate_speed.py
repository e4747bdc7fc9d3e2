"""Speed of the Great Expectations data gate on a big selected table, against a plain GX suite.

Goal: validating a 1,000,000-row selected table plus its metrics with `tasks.metrics.expectations.
validate_tables` (all suites: schema, row-level, aggregates, leakage, messages, metrics), Parquet
read included, takes <= 5 s on 2 CPU cores. The baseline is what a first GX gate would do: read
the same Parquet file, convert its flat columns to pandas, and validate a plain 6-expectation
pandas suite (columns, two not-null, compound key unique, two ranges); a second row converts the
whole table, nested `messages` included, as a naive gate would. Both run warm (GX already imported, the
import time is printed on its own); Data Docs are off unless --docs.

    .venv/bin/python bench/gate_speed.py [--rows 1000000 --k 10 --repeats 3 --docs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, print_table  # noqa: E402
from tasks.config.recipe import CheckConfig  # noqa: E402
from tasks.data.schema import MESSAGE, SELECTED, write_table  # noqa: E402


def synthetic_selected(rows: int, k: int, seed: int = 0) -> pl.DataFrame:
    """SELECTED-shaped rows: rows/k prompts x k samples, chat messages with question and chain."""
    rng = np.random.default_rng(seed)
    prompts = max(rows // k, 1)
    pi = np.repeat(np.arange(prompts), k)[:rows]
    a, b = rng.integers(1, 100, prompts)[pi], rng.integers(1, 100, prompts)[pi]
    base = pl.DataFrame({"p": pi, "a": a, "b": b, "sample_idx": np.tile(np.arange(k), prompts)[:rows]})
    return base.select(
        prompt_id=pl.col("p").cast(pl.String).str.pad_start(16, "0"),
        sample_idx=pl.col("sample_idx").cast(pl.Int32),
        messages=pl.concat_list(
            pl.struct(role=pl.lit("user"), content=pl.format("Mia has {} pens. Then gets {} more. How many?",
                                                             "a", "b")),
            pl.struct(role=pl.lit("assistant"), content=pl.format(" {}+{}={}. Answer: {}", "a", "b",
                                                                  pl.col("a") + pl.col("b"),
                                                                  pl.col("a") + pl.col("b")))),
        score=pl.lit(1.0) + pl.Series(rng.uniform(-0.2, 0.2, rows)),
        origin=pl.lit("self"),
    ).with_columns(pl.col("messages").cast(pl.List(MESSAGE)))


def baseline(path: Path, flat_only: bool) -> bool:
    """Read, convert to pandas (the whole table, or only its flat columns), validate a plain
    6-expectation suite."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    columns = [c for c in SELECTED.columns if c != "messages"] if flat_only else None
    df = pl.read_parquet(path, columns=columns).to_pandas()
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = ctx.suites.add(gx.ExpectationSuite(name="plain", expectations=[
        gxe.ExpectTableColumnsToMatchSet(column_set=list(df.columns)),
        gxe.ExpectColumnValuesToNotBeNull(column="prompt_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="sample_idx"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["prompt_id", "sample_idx"]),
        gxe.ExpectColumnValuesToBeBetween(column="sample_idx", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="score", min_value=-2.0, max_value=2.0),
    ]))
    bd = ctx.data_sources.add_pandas("p").add_dataframe_asset("selected").add_batch_definition_whole_dataframe("all")
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="plain", data=bd, suite=suite))
    return bool(vd.run(batch_parameters={"dataframe": df}).success)


def gate(path: Path, metrics_path: Path, test_ids: list[str], docs: Path | None) -> dict:
    from tasks.metrics.expectations import validate_tables

    selected = pl.read_parquet(path)
    metrics = json.loads(metrics_path.read_text())
    return validate_tables(tables={"selected": selected}, metrics=metrics, test_prompt_ids=test_ids,
                           cfg=CheckConfig(), docs_dir=docs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--docs", action="store_true", help="also build Data Docs in the gate run")
    args = ap.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = write_table(synthetic_selected(args.rows, args.k), tmp_path / "selected.parquet", SELECTED)
        metrics_path = tmp_path / "metrics.json"
        metrics_path.write_text(json.dumps({
            "coverage": 0.8, "distinct_correct_ratio": 0.9, "balance_score": 0.4, "repetition_rate": 0.01,
            "truncation_rate": 0.02, "n_selected": args.rows, "pass@1": 0.5, "n_prompts": args.rows // args.k,
            "n_samples": args.rows}))
        test_ids = [f"t{i:015d}" for i in range(300)]  # 300 held-out ids, none present
        start = time.perf_counter()
        import great_expectations  # noqa: F401
        gx_import = time.perf_counter() - start

        docs = tmp_path / "data_docs" if args.docs else None
        t_gate, result = best_of(lambda: gate(path, metrics_path, test_ids, docs), args.repeats)
        t_base, base_ok = best_of(lambda: baseline(path, flat_only=True), args.repeats)
        t_full, full_ok = best_of(lambda: baseline(path, flat_only=False), args.repeats)
        assert result["passed"], result["failures"]
        assert base_ok and full_ok
        n_exp = sum(s["evaluated"] for s in result["suites"].values())
        print_table(
            f"GX gate on a {args.rows:,}-row selected table + metrics (Parquet read included; best of "
            f"{args.repeats}; GX import {gx_import:.2f} s not included)",
            ["path", "suites", "expectations", "seconds", "ratio to baseline"],
            [["baseline: plain 6-expectation suite, flat columns to pandas", 1, 6, t_base, 1.0],
             ["plain 6-expectation suite, whole table (messages too) to pandas", 1, 6, t_full,
              t_full / t_base],
             [f"flywheel gate{' + Data Docs' if args.docs else ''}", len(result["suites"]), n_exp, t_gate,
              t_gate / t_base]])
        verdict = "meets" if t_gate <= 5.0 else "MISSES"
        speed = max(t_gate, t_base) / min(t_gate, t_base)
        print(f"gate: {t_gate:.2f} s ({verdict} the <= 5 s goal); "
              f"{'faster' if t_gate < t_base else 'slower'} than the baseline by {speed:.2f}x")


if __name__ == "__main__":
    main()
