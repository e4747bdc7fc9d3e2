"""Speed of the audit commands on a workspace with many iterations.

Synthesises a 30-iteration workspace cheaply (no model training): a git repo with one commit and
tag per iteration, dvc.lock files expanded from the real dvc.yaml template (real md5s of the
Parquet/JSON files written, realistic params), run records, and small Parquet tables. Some
iterations fail the gate or are held. Then times `flywheel lineage 2`, `flywheel log` and
`flywheel diff 1 2` (plus a hash lookup and an audit query), as in-process calls (first call and
best warm call) and as CLI subprocesses. Goal: each under 2 s.

    .venv/bin/python bench/lineage_speed.py [--iterations 30 --prompts 64 --k 8 --repeats 3 --keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, print_table  # noqa: E402
from tasks.workspace.provenance import CODE_ROOT  # noqa: E402

GIT_ENV = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]


class _NoAliases(yaml.SafeDumper):
    """dvc.lock as DVC writes it in practice: shared values spelled out, no &anchors."""

    def ignore_aliases(self, data) -> bool:
        return True


def _dump(data: dict) -> str:
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False)


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ENV, *args], cwd=root, check=True, capture_output=True)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _sub(text: str, key: str, item: dict) -> str:
    text = text.replace("${key}", key)
    for k, v in item.items():
        text = text.replace("${item." + k + "}", str(v))
    return text


def _entry(root: Path, path: str) -> dict:
    """A lock entry with the real md5 of files that exist; a stable fake `.dir` hash for models."""
    p = root / path
    if p.is_file():
        return {"path": path, "hash": "md5", "md5": _md5(p), "size": p.stat().st_size}
    fake = hashlib.md5(f"dir:{path}".encode()).hexdigest()
    return {"path": path, "hash": "md5", "md5": fake + ".dir", "size": 130179, "nfiles": 6}


def _lock_stage(root: Path, spec: dict, key: str | None, item: dict, params_by_file: dict) -> dict:
    """One dvc.lock entry expanded from a dvc.yaml stage spec, as `dvc commit` would record it."""
    s = (lambda t: _sub(t, key, item)) if key else (lambda t: t)
    entry: dict = {"cmd": s(spec["cmd"])}
    deps = sorted(s(d) for d in spec.get("deps") or [])
    if deps:
        entry["deps"] = [_entry(root, d) for d in deps]
    params = {}
    for group in spec.get("params") or []:
        for file, keys in group.items():
            file = s(file)
            params[file] = {k: _lookup(params_by_file[file], k) for k in keys}
    entry["params"] = params
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in (spec.get("outs") or []) + (spec.get("metrics") or [])]
    entry["outs"] = [_entry(root, p) for p in sorted(s(o) for o in outs)]
    return entry


def _tables(root: Path, it: str, n_prompts: int, k: int, pass_rate: float, cap: int) -> None:
    """samples / scored / selected / calibration Parquet files for one iteration (DuckDB, deterministic)."""
    d = root / "data" / "iterations" / it
    d.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    i = int(it)
    # prompts of iteration i: a sliding window over the train split, so consecutive iterations overlap
    con.execute(f"""CREATE TABLE samples AS
        SELECT p.prompt_id, CAST(s.sample_idx AS INTEGER) AS sample_idx, '{it}' AS iteration,
               'answer ' || p.prompt_id || ' #' || s.sample_idx || ' it{i}' AS text,
               CAST(20 + hash(p.prompt_id, s.sample_idx, {i}) % 40 AS INTEGER) AS n_tokens,
               CASE WHEN hash(p.prompt_id, s.sample_idx, {i}) % 10 = 0 THEN 'length' ELSE 'stop' END AS finish_reason,
               0.8 AS temperature, CAST(hash(s.sample_idx, {i}) % 2147483647 AS BIGINT) AS seed,
               'model-{i - 1:04d}' AS model_hash, 'main' AS pass_name, p.difficulty
        FROM (SELECT * FROM read_parquet('{root}/data/prompts/prompts.parquet') WHERE split = 'train'
              ORDER BY prompt_id LIMIT {n_prompts} OFFSET {(i - 1) * n_prompts // 2}) p,
             range({k}) s(sample_idx)""")
    con.execute(f"""COPY (SELECT * EXCLUDE (difficulty) FROM samples ORDER BY prompt_id, sample_idx)
                    TO '{d}/samples.parquet' (FORMAT parquet)""")
    con.execute(f"""CREATE TABLE scored AS SELECT * EXCLUDE (difficulty),
               (hash(prompt_id, sample_idx, {i}, 'c') % 1000) / 1000.0 < {pass_rate} / difficulty AS correct,
               (CAST(hash(prompt_id, sample_idx, 'r') % 200 AS INTEGER) - 100) / 100.0 AS reward,
               CAST(NULL AS VARCHAR) AS extracted_answer FROM samples""")
    con.execute("ALTER TABLE scored ADD COLUMN score DOUBLE")
    con.execute("UPDATE scored SET score = CAST(correct AS INTEGER) + reward / 5")
    con.execute(f"COPY (SELECT * FROM scored ORDER BY prompt_id, sample_idx) TO '{d}/scored.parquet' (FORMAT parquet)")
    con.execute(f"""COPY (SELECT prompt_id, sample_idx,
               [{{'role': 'user', 'content': 'q ' || prompt_id}}, {{'role': 'assistant', 'content': text}}] AS messages,
               score, 'self' AS origin FROM scored WHERE correct
               QUALIFY row_number() OVER (PARTITION BY prompt_id ORDER BY score DESC, sample_idx) <= {cap}
               ORDER BY origin, prompt_id, sample_idx) TO '{d}/selected.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT 0.8 AS temperature, 0.5 AS threshold, 0.3 AS balance_score, 0.5 AS pass_at_k,
               0.9 AS distinct_ratio, 10::BIGINT AS n_selected, true AS chosen) TO '{d}/calibration.parquet'
               (FORMAT parquet)""")
    stats = con.execute("""SELECT count(*), count(DISTINCT prompt_id), avg(CAST(correct AS INTEGER)),
                                  avg(n_tokens) FROM scored""").fetchone()
    n_sel = con.execute(f"SELECT count(*) FROM read_parquet('{d}/selected.parquet')").fetchone()[0]
    _write_json(d / "metrics.json", {"n_samples": stats[0], "n_prompts": stats[1], "pass@1": round(stats[2], 6),
                                     "coverage": round(min(1.0, stats[2] * 3), 6), "mean_tokens": round(stats[3], 3),
                                     "n_selected": n_sel, "temperature": 0.8, "threshold": 0.5})
    con.execute(f"""COPY (SELECT prompt_id, 0 AS sample_idx, '{it}' AS iteration, 'x' AS text
               FROM read_parquet('{root}/data/prompts/prompts.parquet') WHERE split = 'test' ORDER BY 1)
               TO '{d}/eval_samples.parquet' (FORMAT parquet)""")


def synthesize(root: Path, iterations: int = 30, n_prompts: int = 64, k: int = 8) -> Path:
    """A workspace with `iterations` tagged iterations (plus the iter-0000 baseline)."""
    from tasks.config.loading import load_recipe, recipe_to_yaml

    root.mkdir(parents=True)
    template = yaml.safe_load((CODE_ROOT / "dvc.yaml").read_text())
    recipe_text = recipe_to_yaml(load_recipe(CODE_ROOT / "configs" / "tiny-arith.yaml"))
    recipe = yaml.safe_load(recipe_text)
    _git(root, "init", "-q", "-b", "main")
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text("[core]\n    analytics = False\n")
    shutil.copyfile(CODE_ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "flywheel.yaml").write_text(recipe_text)
    (root / ".gitignore").write_text(".flywheel/\nreports/\n")
    con = duckdb.connect()
    (root / "data" / "prompts").mkdir(parents=True)
    total = n_prompts * (iterations + 2)
    con.execute(f"""COPY (SELECT substr(sha256('p' || i), 1, 16) AS prompt_id, 'What is ' || i || '?' AS text,
                   CAST(i AS VARCHAR) AS answer, CASE WHEN i < 100 THEN 'test' WHEN i < 116 THEN 'probe'
                   WHEN i < 316 THEN 'seed' ELSE 'train' END AS split, 'arith' AS source,
                   CAST(1 + i % 4 AS INTEGER) AS difficulty, CAST(NULL AS VARCHAR) AS target
                   FROM range({316 + total}) r(i) ORDER BY split, prompt_id)
                   TO '{root}/data/prompts/prompts.parquet' (FORMAT parquet)""")
    code = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}
    packages = {"dvc": "3.67.1", "duckdb": duckdb.__version__, "torch": "2.13.0+cpu", "transformers": "5.19.0"}
    lock: dict = {"schema": "2.0", "stages": {}}
    params = {"flywheel.yaml": recipe}
    _write_json(root / "data" / "iterations" / "0000" / "eval.json", {"pass@1": 0.05, "pass@8": 0.2, "n_test": 100})
    for name in ("prepare", "base", "warmup", "baseline", "reward"):
        lock["stages"][name] = _lock_stage(root, template["stages"][name], None, {}, params)
    _write_json(root / "records" / "0000.json", {
        "iteration": "0000", "status": "baseline", "parent": None, "next_parent": "0000", "choice": None,
        "metrics": None, "gate": None, "eval": {"pass@1": 0.05, "pass@8": 0.2, "n_test": 100}, "promotion": None,
        "started": "2026-01-01T02:00:00+00:00", "finished": "2026-01-01T02:05:00+00:00", "code": code,
        "packages": packages})
    (root / "dvc.lock").write_text(_dump(lock))
    (root / "iterations.yaml").write_text(yaml.safe_dump({"iterations": {}, "trained": {}}))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "baseline")
    _git(root, "tag", "iter-0000")
    table: dict[str, dict] = {}
    trained: dict[str, dict] = {}
    parent, best = "0000", 0.05
    for i in range(1, iterations + 1):
        it = f"{i:04d}"
        day = f"2026-01-{1 + i % 28:02d}"
        p = yaml.safe_load(recipe_text)
        p["select"]["cap_per_prompt"] = 4 if i <= iterations // 2 else 2  # a mid-run config change
        d = root / "data" / "iterations" / it
        d.mkdir(parents=True, exist_ok=True)
        (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=True))
        item = {"parent": parent, "init": parent, "round": min(i, 3), "first": "0001"}
        table[it] = item
        gated = i % 9 != 0  # every ninth iteration fails the data gate
        if gated:
            trained[it] = item
        (root / "iterations.yaml").write_text(yaml.safe_dump({"iterations": table, "trained": trained}))
        _write_json(d / "choice.json", {"calibrated": True, "temperature": [0.7, 0.8, 0.9][i % 3], "threshold": 0.5})
        _tables(root, it, n_prompts, k, pass_rate=min(0.9, 0.2 + 0.02 * i), cap=p["select"]["cap_per_prompt"])
        failures = [] if gated else ["coverage 0.02 < min_coverage 0.05"]
        _write_json(d / "gate.json", {"passed": gated, "failures": failures, "suites": {}})
        by_file = {f"data/iterations/{it}/params.yaml": p}
        names = ["calibrate", "generate", "score", "select", "check"] + (["train", "evaluate", "promote"] if gated else [])
        ev, promo = None, None
        for name in names:
            if name == "evaluate":
                score = round(best + (0.01 if i % 4 else -0.05), 4)
                ev = {"pass@1": score, "pass@8": round(min(1.0, score * 2), 4), "n_test": 100}
                _write_json(d / "eval.json", ev)
            if name == "promote":
                ok = ev["pass@1"] >= best - 0.02
                promo = {"promoted": ok, "candidate": it, "parent": parent, "next_parent": it if ok else parent,
                         "reason": f"pass@1 {best:.3f} -> {ev['pass@1']:.3f}"}
                _write_json(d / "promotion.json", promo)
            lock["stages"][f"{name}@{it}"] = _lock_stage(root, template["stages"][name]["do"], it, item, by_file)
        if promo is None:
            promo = {"promoted": False, "reason": "data gate failed: " + "; ".join(failures), "next_parent": parent,
                     "candidate": it, "parent": parent}
        _write_json(root / "records" / f"{it}.json", {
            "iteration": it, "status": "completed" if gated else "gate-failed", "parent": parent,
            "next_parent": promo["next_parent"], "choice": json.loads((d / "choice.json").read_text()),
            "metrics": json.loads((d / "metrics.json").read_text()), "gate": json.loads((d / "gate.json").read_text()),
            "eval": ev, "promotion": promo, "started": f"{day}T02:00:00+00:00", "finished": f"{day}T02:20:00+00:00",
            "code": code, "packages": packages})
        if promo["promoted"]:
            best = ev["pass@1"]
        parent = promo["next_parent"]
        (root / "dvc.lock").write_text(_dump(lock))
        # tables are DVC outs, git-ignored as in a real workspace
        (d / ".gitignore").write_text("".join(f"/{n}.parquet\n" for n in
                                              ("calibration", "samples", "scored", "selected", "eval_samples")))
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", f"iteration {it}")
        _git(root, "tag", f"iter-{it}")
    (root / "data" / "prompts" / ".gitignore").write_text("/prompts.parquet\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="Write the workspace here and keep it.")
    args = ap.parse_args()
    tmp = None
    if args.keep is None:
        tmp = tempfile.mkdtemp(prefix="lineage-bench-")
    root = (args.keep or Path(tmp) / "ws").resolve()
    start = time.perf_counter()
    synthesize(root, args.iterations, args.prompts, args.k)
    lock_kb = (root / "dvc.lock").stat().st_size / 1024
    print(f"synthesised {args.iterations} iterations in {time.perf_counter() - start:.1f} s "
          f"(dvc.lock at the last tag: {lock_kb:.0f} KiB) at {root}")

    from tasks.audit.diff import diff
    from tasks.audit.lineage import find_artifact, iteration_log
    from tasks.audit.lock_history import History
    from tasks.audit.sql import query

    ckpt = History(root).lock("0002")["train@0002"].outs[0].md5[:10]
    last = str(args.iterations)
    cases = [
        ("lineage 2", lambda: find_artifact(root, "2"), ["lineage", "2"]),
        (f"lineage {last}", lambda: find_artifact(root, last), ["lineage", last]),
        ("log", lambda: iteration_log(root), ["log"]),
        ("diff 1 2", lambda: diff(root, "1", "2"), ["diff", "1", "2"]),
        (f"diff 1 {last}", lambda: diff(root, "1", last), ["diff", "1", last]),
        ("lineage <md5 of models/0002>", lambda: find_artifact(root, ckpt), ["lineage", ckpt]),
        ("sql <promoted checkpoints>", lambda: query(root, PROMOTED_SQL), ["sql", PROMOTED_SQL]),
    ]
    rows = []
    for label, fn, argv in cases:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        warm, _ = best_of(fn, args.repeats)
        cli, _ = best_of(lambda argv=argv: subprocess.run(
            [sys.executable, "-m", "flywheel", *argv, "-w", str(root)], check=True, capture_output=True,
            cwd=CODE_ROOT), args.repeats)
        rows.append([label, first, warm, cli, "yes" if max(first, cli) < 2.0 else "NO"])
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flywheel", "--help"], check=True, capture_output=True, cwd=CODE_ROOT)
    rows.append(["--help (startup floor)", "", "", time.perf_counter() - t0, ""])
    print_table(f"flywheel audit commands, {args.iterations}-iteration workspace (seconds)",
                ["flywheel …", "in-process 1st", "warm (best)", "CLI (best)", "< 2 s"], rows)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


PROMOTED_SQL = ("SELECT i.iteration, a.md5, i.code_commit FROM iterations i JOIN artifacts a "
                "ON a.tag = 'iter-' || i.iteration AND a.stage = 'train@' || i.iteration WHERE i.promoted")

if __name__ == "__main__":
    main()
