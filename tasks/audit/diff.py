"""What changed between two iterations (or two Parquet tables): rows added and removed by key,
per-prompt correct counts, metric deltas and config deltas.

All table work is DuckDB SQL over the Parquet files in place; only counts and a few example
keys come back to Python. An iteration's tables are read as recorded: the DVC cache object with
the md5 from dvc.lock at its tag, else the workspace file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from tasks.audit.lock_history import History, cache_object, flatten
from tasks.audit.sql import lit
from tasks.errors import WorkspaceError

KEYS = {"samples": ("prompt_id", "sample_idx"), "scored": ("prompt_id", "sample_idx"),
        "selected": ("prompt_id", "sample_idx"), "judged": ("prompt_id", "sample_idx"),
        "pairs": ("prompt_id", "chosen_idx", "rejected_idx"),
        "prompts": ("prompt_id",), "allocation": ("prompt_id",)}
FILES = {"pairs": "selected"}  # select writes its pairs (mode pairs) where the sft examples would be


def _key_for(con: duckdb.DuckDBPyConnection, table: str | None) -> tuple[str, ...]:
    if table:
        if table not in KEYS:
            raise WorkspaceError(f"unknown table {table!r}.", fix=f"use one of {', '.join(KEYS)}.")
        return KEYS[table]
    cols = {r[0] for r in con.execute("DESCRIBE a").fetchall()}
    if {"prompt_id", "chosen_idx", "rejected_idx"} <= cols:
        return KEYS["pairs"]
    if {"prompt_id", "sample_idx"} <= cols:
        return KEYS["samples"]
    if "prompt_id" in cols:
        return KEYS["prompts"]
    raise WorkspaceError("cannot tell the table's key: no prompt_id column.", fix="pass --table.")


def diff_tables(a: Path, b: Path, table: str | None = None, limit: int = 10) -> dict[str, Any]:
    """Rows added/removed by key, per-column changes on common keys, and (when both tables have
    `correct`) per-prompt correct-count changes."""
    for p in (a, b):
        if not Path(p).is_file():
            raise WorkspaceError("table not found.", file=str(p), fix="give a Parquet file path or an iteration id.")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW a AS SELECT * FROM read_parquet({lit(str(a))})")
    con.execute(f"CREATE VIEW b AS SELECT * FROM read_parquet({lit(str(b))})")
    key = _key_for(con, table)
    k = ", ".join(key)
    con.execute(f"CREATE TEMP TABLE ka AS SELECT DISTINCT {k} FROM a")
    con.execute(f"CREATE TEMP TABLE kb AS SELECT DISTINCT {k} FROM b")
    rows_a, rows_b = (con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("a", "b"))
    added, removed, common = con.execute(f"""
        SELECT (SELECT count(*) FROM kb ANTI JOIN ka USING ({k})),
               (SELECT count(*) FROM ka ANTI JOIN kb USING ({k})),
               (SELECT count(*) FROM ka SEMI JOIN kb USING ({k}))""").fetchone()

    def examples(x: str, y: str) -> list[dict]:
        rows = con.execute(f"SELECT {k} FROM {x} ANTI JOIN {y} USING ({k}) ORDER BY {k} LIMIT {int(limit)}")
        return [dict(zip(key, r)) for r in rows.fetchall()]

    cols_a = [r[0] for r in con.execute("DESCRIBE a").fetchall()]
    cols_b = {r[0] for r in con.execute("DESCRIBE b").fetchall()}
    shared = [c for c in cols_a if c in cols_b and c not in key]
    changed: dict[str, int] = {}
    if shared and common:
        sums = ", ".join(f'sum(CAST(a."{c}" IS DISTINCT FROM b."{c}" AS INTEGER))' for c in shared)
        row = con.execute(f"SELECT {sums} FROM a JOIN b USING ({k})").fetchone()
        changed = {c: int(n or 0) for c, n in zip(shared, row, strict=True) if n}
    out: dict[str, Any] = {
        "a": str(a), "b": str(b), "key": list(key), "rows": {"a": rows_a, "b": rows_b},
        "keys": {"added": added, "removed": removed, "common": common},
        "added_examples": examples("kb", "ka"), "removed_examples": examples("ka", "kb"),
        "changed_columns": changed}
    if "correct" in cols_a and "correct" in cols_b:
        out["correct"] = _correct_counts(con, limit)
    return out


def _correct_counts(con: duckdb.DuckDBPyConnection, limit: int) -> dict[str, Any]:
    """Per prompt: correct samples in A and in B (full outer join), summarised, plus the largest moves."""
    con.execute("""
        CREATE TEMP TABLE pc AS
        SELECT prompt_id, ca.n AS n_a, ca.c AS correct_a, cb.n AS n_b, cb.c AS correct_b
        FROM (SELECT prompt_id, count(*) AS n, CAST(sum(CAST(correct AS INTEGER)) AS BIGINT) AS c
              FROM a GROUP BY prompt_id) ca
        FULL JOIN (SELECT prompt_id, count(*) AS n, CAST(sum(CAST(correct AS INTEGER)) AS BIGINT) AS c
                   FROM b GROUP BY prompt_id) cb USING (prompt_id)""")
    summary = con.execute("""
        SELECT count(*) FILTER (WHERE n_a IS NOT NULL AND n_b IS NOT NULL AND correct_b > correct_a),
               count(*) FILTER (WHERE n_a IS NOT NULL AND n_b IS NOT NULL AND correct_b < correct_a),
               count(*) FILTER (WHERE n_a IS NOT NULL AND n_b IS NOT NULL AND correct_b = correct_a),
               count(*) FILTER (WHERE n_b IS NULL), count(*) FILTER (WHERE n_a IS NULL),
               coalesce(sum(correct_a), 0), coalesce(sum(correct_b), 0),
               count(*) FILTER (WHERE correct_a > 0), count(*) FILTER (WHERE correct_b > 0)
        FROM pc""").fetchone()
    names = ("improved", "worsened", "unchanged", "only_in_a", "only_in_b", "total_correct_a", "total_correct_b",
             "prompts_solved_a", "prompts_solved_b")
    moves = con.execute(f"""
        SELECT prompt_id, n_a, correct_a, n_b, correct_b, correct_b - correct_a AS delta FROM pc
        WHERE n_a IS NOT NULL AND n_b IS NOT NULL AND correct_a <> correct_b
        ORDER BY abs(correct_b - correct_a) DESC, prompt_id LIMIT {int(limit)}""").fetchall()
    cols = ("prompt_id", "n_a", "correct_a", "n_b", "correct_b", "delta")
    return {**{n: int(v) for n, v in zip(names, summary, strict=True)},
            "largest_changes": [dict(zip(cols, m)) for m in moves]}


def _numeric_deltas(a: dict | None, b: dict | None) -> dict[str, dict]:
    fa, fb = flatten(a or {}), flatten(b or {})
    out = {}
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if va == vb:
            continue
        num = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (va, vb))
        out[key] = {"a": va, "b": vb, "delta": (vb - va) if num else None}
    return out


def _config_deltas(a: dict | None, b: dict | None) -> dict[str, dict]:
    fa, fb = flatten(a or {}), flatten(b or {})
    return {"changed": {k: {"a": fa[k], "b": fb[k]} for k in sorted(set(fa) & set(fb)) if fa[k] != fb[k]},
            "added": {k: fb[k] for k in sorted(set(fb) - set(fa))},
            "removed": {k: fa[k] for k in sorted(set(fa) - set(fb))}}


def recorded_table(h: History, it: str, table: str) -> Path | None:
    """The iteration's table as recorded at its tag: the DVC cache object with the locked md5,
    else the workspace file. None when the iteration has no such output."""
    name = FILES.get(table, table)
    rel = f"data/iterations/{it}/{name}.parquet" if table != "prompts" else "data/prompts/prompts.parquet"
    out = h.producers(it).get(rel)
    if out is None:
        return None
    md5 = next(o.md5 for o in out.outs if o.path == rel)
    obj = cache_object(h.root, md5)
    ws = h.root / rel
    return obj or (ws if ws.is_file() else None)


def diff_iterations(root: Path, a: str, b: str, table: str = "scored", limit: int = 10) -> dict[str, Any]:
    """Config, metric and table differences between two finished iterations."""
    h = History(Path(root))
    a, b = h.require(a), h.require(b)
    L = h.layout

    def params_path(it: str) -> str:
        return L.rel(L.params(it)) if it != "0000" else L.rel(L.recipe)

    h.prefetch([], [], [(it, p) for it in (a, b) for p in (params_path(it), L.rel(L.metrics(it)),
                                                             L.rel(L.eval(it)), "iterations.yaml", "dvc.lock")])
    vars_a = ((h.yaml(a, "iterations.yaml") or {}).get("iterations") or {}).get(a)
    vars_b = ((h.yaml(b, "iterations.yaml") or {}).get("iterations") or {}).get(b)
    out: dict[str, Any] = {
        "a": a, "b": b,
        "params": _config_deltas(h.yaml(a, params_path(a)), h.yaml(b, params_path(b))),
        "iteration_vars": _config_deltas(vars_a, vars_b),
        "metrics": _numeric_deltas(h.json(a, L.rel(L.metrics(a))), h.json(b, L.rel(L.metrics(b)))),
        "eval": _numeric_deltas(h.json(a, L.rel(L.eval(a))), h.json(b, L.rel(L.eval(b)))),
        "table": None, "table_name": table,
    }
    ta, tb = recorded_table(h, a, table), recorded_table(h, b, table)
    if ta is not None and tb is not None:
        out["table"] = diff_tables(ta, tb, table, limit)
        name = FILES.get(table, table)
        out["table"].update(a=L.rel(L.iter_dir(a)) + f"/{name}.parquet", b=L.rel(L.iter_dir(b)) + f"/{name}.parquet",
                            a_source=str(ta), b_source=str(tb))
    return out


def diff(root: Path | None, a: str, b: str, table: str | None = None, limit: int = 10) -> dict[str, Any]:
    """Two Parquet paths -> a table diff; two iteration ids -> an iteration diff."""
    def as_file(x: str) -> Path | None:
        cands = [Path(x), *([Path(root) / x] if root else [])]
        return next((c for c in cands if c.is_file()), None)

    fa, fb = as_file(a), as_file(b)
    if fa and fb:
        return {"a": str(fa), "b": str(fb), "table_name": table, "table": diff_tables(fa, fb, table, limit)}
    if root is None:
        raise WorkspaceError(f"{a!r}/{b!r} are not Parquet files.", fix="give a workspace with -w to diff iterations.")
    return diff_iterations(Path(root), a, b, table or "scored", limit)


def diff_lines(d: dict[str, Any]) -> list[str]:
    """A diff for people: one line per section, examples indented."""
    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    def deltas(title: str, items: dict[str, dict]) -> str:
        if not items:
            return f"{title}: no changes"
        parts = [f"{k} {fmt(v['a'])} → {fmt(v['b'])}" + (f" ({v['delta']:+g})" if v.get("delta") is not None else "")
                 for k, v in items.items()]
        return f"{title}: " + "; ".join(parts)

    out = []
    if "params" in d:
        out.append(f"iteration {d['a']} → {d['b']}")
        for title, key in (("config (params.yaml)", "params"), ("iteration vars (iterations.yaml)", "iteration_vars")):
            c = d[key]
            items = {**c["changed"], **{k: {"a": None, "b": v} for k, v in c["added"].items()},
                     **{k: {"a": v, "b": None} for k, v in c["removed"].items()}}
            out.append(deltas(title, items))
        out.append(deltas("pool metrics (metrics.json)", d["metrics"]))
        out.append(deltas("test metrics (eval.json)", d["eval"]))
    t = d.get("table")
    if t is None:
        out.append(f"{d.get('table_name')}.parquet: not recorded for both iterations")
        return out
    keys = ", ".join(t["key"])
    out.append(f"{t['a']} → {t['b']}: {t['rows']['a']} → {t['rows']['b']} rows; keys ({keys}): "
               f"+{t['keys']['added']} added, -{t['keys']['removed']} removed, {t['keys']['common']} common")
    if t["changed_columns"]:
        out.append("  changed on common keys: " + ", ".join(f"{c} {n}" for c, n in t["changed_columns"].items()))
    for label in ("added", "removed"):
        ex = t[f"{label}_examples"]
        if ex:
            more = t["keys"][label] - len(ex)
            out.append(f"  {label}: " + ", ".join(":".join(map(str, e.values())) for e in ex)
                       + (f" … and {more} more" if more > 0 else ""))
    c = t.get("correct")
    if c:
        out.append(f"  correct per prompt: {c['improved']} improved, {c['worsened']} worsened, {c['unchanged']} "
                   f"unchanged, {c['only_in_a']} only in A, {c['only_in_b']} only in B; total correct "
                   f"{c['total_correct_a']} → {c['total_correct_b']}; prompts solved {c['prompts_solved_a']} → "
                   f"{c['prompts_solved_b']}")
        for m in c["largest_changes"]:
            out.append(f"    {m['prompt_id']}  {m['correct_a']}/{m['n_a']} → {m['correct_b']}/{m['n_b']} "
                       f"({m['delta']:+d})")
    return out
