"""A DuckDB connection over a workspace, for auditors who would rather ask in SQL.

Views: `iterations` (run records), `metrics` (one wide row per iteration), `costs` and `stage_costs`
(the cost report of each iteration, and of each of its stages), `artifacts` and `deps`
(every out and dep in dvc.lock at every iter-* tag), and the Parquet tables `prompts`,
`samples`, `scored` (with `origin`, `hint_kind` and `hint` in every iteration: `self` and NULL where the
hint pass did not run), `selected` (the pairs, in a pairs iteration), `judged` (the judge's replies, reward source
`judge`), `calibration`, `eval_samples` and `allocation` (samples per pool prompt and why, adaptive K), each with
an `iteration` column from the file path.
Nothing is copied: the views read the JSON and Parquet files in place.
"""

from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path

import duckdb

from tasks.audit.lock_history import History

ITERATION_TABLES = ("samples", "scored", "selected", "judged", "calibration", "eval_samples", "allocation")
RECORD_COLUMNS = ("{iteration: 'VARCHAR', status: 'VARCHAR', parent: 'VARCHAR', next_parent: 'VARCHAR', "
                  "started: 'TIMESTAMPTZ', finished: 'TIMESTAMPTZ', code: 'STRUCT(\"commit\" VARCHAR, dirty BOOLEAN)', "
                  "packages: 'JSON', choice: 'JSON', metrics: 'JSON', gate: 'JSON', eval: 'JSON', promotion: 'JSON', "
                  "cost: 'JSON'}")
COST_FIGURES = {"wall_s": "DOUBLE", "tokens_generated": "BIGINT", "tokens_per_s": "DOUBLE", "train_tokens": "BIGINT",
                "train_tokens_per_s": "DOUBLE", "train_steps": "BIGINT", "peak_rss_mb": "DOUBLE"}


def lit(value: str | int | list) -> str:
    """A SQL literal. Bound parameters would be simpler, but DuckDB's Python client imports pandas
    (~0.25 s) on the first bound parameter, and these commands should start fast."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"no literal for {value!r}")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def column_name(prefix: str, key: str) -> str:
    """`pass@1` of eval.json -> `test_pass_at_1`; of metrics.json -> `pool_pass_at_1`."""
    return prefix + "_" + re.sub(r"[^0-9A-Za-z]+", "_", key.replace("@", "_at_")).strip("_")


def _iterations_view(con: duckdb.DuckDBPyConnection, root: Path) -> bool:
    pattern = root / "records" / "[0-9][0-9][0-9][0-9].json"
    if not any((root / "records").glob("[0-9][0-9][0-9][0-9].json")):
        return False
    con.execute(f"""
        CREATE VIEW iterations AS
        SELECT iteration, status, parent, next_parent, started, finished,
               code."commit" AS code_commit, code.dirty AS code_dirty,
               CAST(choice->>'$.temperature' AS DOUBLE) AS temperature,
               CAST(choice->>'$.threshold' AS DOUBLE) AS threshold,
               CAST(gate->>'$.passed' AS BOOLEAN) AS gate_passed,
               CAST(gate->'$.failures' AS VARCHAR[]) AS gate_failures,
               CAST(promotion->>'$.promoted' AS BOOLEAN) AS promoted,
               promotion->>'$.reason' AS reason,
               packages, choice, metrics, gate, eval, promotion, cost
        FROM read_json({lit(str(pattern))}, columns={RECORD_COLUMNS}, format='auto')""")
    return True


def _cost_views(con: duckdb.DuckDBPyConnection) -> None:
    """`costs`: an iteration's totals, device and GPU-hours; `stage_costs`: one row per stage it ran."""
    figures = ", ".join(f"TRY_CAST(cost->>'$.{k}' AS {t}) AS {k}" for k, t in COST_FIGURES.items())
    con.execute(f"""
        CREATE VIEW costs AS
        SELECT iteration, {figures}, cost->>'$.device' AS device, TRY_CAST(cost->>'$.gpus' AS BIGINT) AS gpus,
               TRY_CAST(cost->>'$.gpu_hours' AS DOUBLE) AS gpu_hours
        FROM iterations WHERE cost IS NOT NULL""")
    stage_figures = ", ".join(f"TRY_CAST(entry->>'$.{k}' AS {t}) AS {k}"
                              for k, t in {**COST_FIGURES, "compute_s": "DOUBLE"}.items())
    con.execute(f"""
        CREATE VIEW stage_costs AS
        SELECT iteration, stage, {stage_figures}, entry->>'$.process' AS process, device
        FROM (SELECT iteration, stage, json_extract(cost, '$.stages."' || stage || '"') AS entry,
                     cost->>'$.device' AS device
              FROM (SELECT iteration, cost, unnest(json_keys(cost, '$.stages')) AS stage
                    FROM iterations WHERE cost IS NOT NULL))""")


def _metrics_view(con: duckdb.DuckDBPyConnection) -> None:
    """Flatten metrics.json (pool_*) and eval.json (test_*) into columns; nested maps one level down."""
    cols: dict[str, str] = {}
    for src, prefix in (("metrics", "pool"), ("eval", "test")):
        keys = con.execute(f"""
            SELECT DISTINCT k, json_type({src}, '$."' || k || '"') AS t
            FROM (SELECT {src}, unnest(json_keys({src})) AS k FROM iterations WHERE {src} IS NOT NULL)
            ORDER BY k""").fetchall()
        for key, kind in keys:
            path = f'$."{key}"'
            if kind == "OBJECT":
                subs = con.execute(f"SELECT DISTINCT unnest(json_keys({src}, {lit(path)})) FROM iterations "
                                   f"WHERE {src} IS NOT NULL ORDER BY 1").fetchall()
                for (sub,) in subs:
                    sub_path = lit(path + '."' + sub + '"')
                    cols.setdefault(column_name(prefix, f"{key}_{sub}"), f"TRY_CAST({src}->>{sub_path} AS DOUBLE)")
            elif kind in ("DOUBLE", "UBIGINT", "BIGINT", "BOOLEAN"):
                cols.setdefault(column_name(prefix, key), f"TRY_CAST({src}->>{lit(path)} AS DOUBLE)")
    select = ", ".join(f'{expr} AS "{name}"' for name, expr in cols.items())
    con.execute(f"CREATE VIEW metrics AS SELECT iteration{', ' + select if select else ''} FROM iterations")


def _lock_views(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """`artifacts` and `deps`: every out / dep of every stage in dvc.lock at every iter-* tag.

    Rows go through a temporary CSV file: DuckDB's reader is fast, and registering Python or Arrow
    objects would import pandas/pyarrow (a quarter of a second) on every `flywheel sql`."""
    h = History(root)
    h.prefetch(h.iterations, ["dvc.lock"])
    columns = ("{tag: 'VARCHAR', iteration: 'VARCHAR', commit: 'VARCHAR', stage: 'VARCHAR', "
               "stage_iteration: 'VARCHAR', path: 'VARCHAR', md5: 'VARCHAR', size: 'BIGINT', nfiles: 'BIGINT'}")
    with tempfile.TemporaryDirectory(prefix="flywheel-audit-") as tmp:
        files = {view: Path(tmp) / f"{view}.csv" for view in ("artifacts", "deps")}
        with files["artifacts"].open("w", newline="") as fo, files["deps"].open("w", newline="") as fd:
            writers = {"outs": csv.writer(fo), "deps": csv.writer(fd)}
            for it in h.iterations:
                for s in h.lock(it).values():
                    for kind, entries in (("outs", s.outs), ("deps", s.deps)):
                        writers[kind].writerows((f"iter-{it}", it, h.commits[it], s.name, s.iteration, e.path, e.md5,
                                                 e.size, e.nfiles) for e in entries)
        for view, path in files.items():
            con.execute(f"CREATE TABLE {view} AS SELECT * FROM read_csv({lit(str(path))}, header=false, "
                        f"columns={columns}, quote='\"', escape='\"', nullstr='')")


def _parquet_views(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    prompts = root / "data" / "prompts" / "prompts.parquet"
    if prompts.is_file():
        con.execute(f"CREATE VIEW prompts AS SELECT * FROM read_parquet({lit(str(prompts))})")
    for name in ITERATION_TABLES:
        files = sorted((root / "data" / "iterations").glob(f"[0-9][0-9][0-9][0-9]/{name}.parquet"))
        if not files:
            continue
        src = f"read_parquet({lit(str(root / 'data' / 'iterations' / '*' / f'{name}.parquet'))}, " \
              "filename=true, union_by_name=true)"
        have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        drop = ", ".join(c for c in ("filename", "iteration") if c in have)
        con.execute(f"CREATE VIEW {name} AS SELECT regexp_extract(filename, '([0-9]{{4}})/[a-z_]+\\.parquet$', 1) "
                    f"AS iteration, * EXCLUDE ({drop}){_origin_columns(name, have)} FROM {src}")


def _origin_columns(name: str, have: set[str]) -> str:
    """`samples` and `scored` have `origin`, `hint_kind` and `hint` in every iteration: a file written with the
    hint pass off (or before it existed) lacks them, and its rows are `self`, without a hint. union_by_name gives
    NULL where some files have the column; where none has it, it is added here."""
    if name not in ("samples", "scored"):
        return ""
    replace = ["coalesce(origin, 'self') AS origin"] if "origin" in have else []
    added = [expr for col, expr in (("origin", "'self' AS origin"), ("hint_kind", "CAST(NULL AS VARCHAR) AS hint_kind"),
                                    ("hint", "CAST(NULL AS VARCHAR) AS hint")) if col not in have]
    return (f" REPLACE ({', '.join(replace)})" if replace else "") + "".join(", " + e for e in added)


def connect(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the workspace's audit views registered."""
    root = Path(root).resolve()
    con = duckdb.connect()
    if _iterations_view(con, root):
        _metrics_view(con)
        _cost_views(con)
    _lock_views(con, root)
    _parquet_views(con, root)
    return con


def query(root: Path, sql: str, limit: int | None = None) -> tuple[list[str], list[tuple]]:
    """Run one query; returns (column names, rows). Only the result comes back to Python."""
    con = connect(root)
    rel = con.sql(sql)
    if rel is None:
        return [], []
    cols = list(rel.columns)
    rows = rel.fetchmany(limit) if limit else rel.fetchall()
    return cols, rows
