"""Hint-pass rows added to a synthesized workspace's tables, as `generate` and `score` write them with
`hints.enabled`: the first pass's rows become `self` (no hint), and each prompt gets two more samples from
sample_idx 1000 up, one `rationalized` (kind `answer`) and one `hinted` (kind `partial`). The files are
rewritten in the work tree only, so their bytes no longer match dvc.lock; the audit code that reads them
in place (the SQL views, `lineage --example`) does not check that."""

from __future__ import annotations

from pathlib import Path

import duckdb

HINTS = {1000: ("rationalized", "answer", "(The answer is 7.)"), 1001: ("hinted", "partial", "3+4=7\n7*2=14")}


def add_hinted_rows(ws: Path, it: str) -> None:
    con = duckdb.connect()
    hints = ", ".join(f"({i}, '{o}', '{k}', '{h}')" for i, (o, k, h) in HINTS.items())
    for name in ("samples", "scored"):
        path = ws / "data" / "iterations" / it / f"{name}.parquet"
        con.execute(f"CREATE OR REPLACE TABLE t AS SELECT * FROM read_parquet('{path}')")
        con.execute(f"""CREATE OR REPLACE TABLE out AS
            SELECT *, 'self' AS origin, CAST(NULL AS VARCHAR) AS hint_kind, CAST(NULL AS VARCHAR) AS hint FROM t
            UNION ALL BY NAME
            SELECT t.* REPLACE (CAST(h.idx AS INTEGER) AS sample_idx, 'hint' AS pass_name),
                   h.origin, h.kind AS hint_kind, h.hint
            FROM (SELECT * FROM t QUALIFY row_number() OVER (PARTITION BY prompt_id ORDER BY sample_idx) = 1) t,
                 (VALUES {hints}) h(idx, origin, kind, hint)""")
        con.execute(f"COPY (SELECT * FROM out ORDER BY prompt_id, sample_idx) TO '{path}' (FORMAT parquet)")
