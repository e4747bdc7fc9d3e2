"""Lineage of iterations, artifacts and training examples, built only from what was recorded.

Hashes, sizes, stage params and the dependency graph come from `dvc.lock` at each iteration's tag;
run seed, code revision and package versions from the run record committed with it; the choice,
gate and promotion from their JSON outputs at the tag. Per-stage seeds are recomputed with
`tasks.seeds.derive_seed`, the function the stages themselves call. Nothing is inferred from names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tasks.audit.lock_history import Entry, History, Stage, cache_object
from tasks.audit.report import pass_at_k_entry
from tasks.audit.sql import lit
from tasks.errors import WorkspaceError
from tasks.seeds import derive_seed
from tasks.workspace.layout import tag_for

# The stage key each stage passes to derive_seed (see tasks/pipeline.py::_stage_fns): the baseline
# evaluation of models/0000 draws as "evaluate" of iteration 0000; prepare seeds per split itself.
SEED_KEYS = {"base": "base", "warmup": "warmup", "baseline": "evaluate", "reward": "reward",
             "calibrate": "calibrate", "generate": "generate", "train": "train", "evaluate": "evaluate"}
HEX = re.compile(r"^[0-9a-fA-F]{6,32}$")
MODEL_DIR = re.compile(r"^models/([^/]+)$")


def _roles(it: str, lock: dict[str, Stage], h: History) -> dict[str, str]:
    """Named steps of the chain -> artifact path (parent/init models read from the stages' deps)."""
    L = h.layout
    rel = L.rel
    if it == "0000":
        return {"prompts": rel(L.prompts), "base_model": rel(L.base_model), "checkpoint": rel(L.model(it)),
                "reward_model": rel(L.reward_model), "eval_samples": rel(L.eval_samples(it)),
                "evaluation": rel(L.eval(it))}

    def model_dep(stage: str) -> str | None:
        s = lock.get(f"{stage}@{it}")
        deps = [d.path for d in s.deps if MODEL_DIR.match(d.path)] if s else []
        deps = [d for d in deps if d != rel(L.reward_model)]
        return deps[0] if deps else None

    roles = {"prompts": rel(L.prompts), "parent_model": model_dep("generate"), "init_model": model_dep("train"),
             "reward_model": rel(L.reward_model), "calibration": rel(L.calibration(it)), "choice": rel(L.choice(it)),
             "samples": rel(L.samples(it)), "scored": rel(L.scored(it)), "selected": rel(L.selected(it)),
             "metrics": rel(L.metrics(it)), "gate": rel(L.gate(it)), "checkpoint": rel(L.model(it)),
             "eval_samples": rel(L.eval_samples(it)), "evaluation": rel(L.eval(it)),
             "promotion": rel(L.promotion(it))}
    return {k: v for k, v in _method_roles(it, lock, roles).items() if v}


def _method_roles(it: str, lock: dict[str, Stage], roles: dict[str, str | None]) -> dict[str, str | None]:
    """Preference iterations, as recorded in the stages' params: select's output is the pairs table, and a
    DPO train stage's reference model is its init model (the parent, which `continue` mode trains from)."""
    select, train = lock.get(f"select@{it}"), lock.get(f"train@{it}")
    pairs = select is not None and select.params.get("select.mode") == "pairs"
    dpo = train is not None and train.params.get("train.objective") == "dpo"
    out: dict[str, str | None] = {}
    for k, v in roles.items():
        out["pairs" if pairs and k == "selected" else k] = v
        if dpo and k == "init_model":
            out["reference_model"] = v
    return out


def _own_stages(it: str, lock: dict[str, Stage]) -> list[str]:
    if it == "0000":
        return [n for n in lock if "@" not in n]
    return [n for n in lock if n.endswith(f"@{it}")]


def _closure(lock: dict[str, Stage], producers: dict[str, Stage], start: list[str]) -> list[str]:
    """Every stage upstream of `start` (inclusive), following recorded deps to their producers."""
    seen, todo = list(start), list(start)
    while todo:
        for dep in lock[todo.pop()].deps:
            p = producers.get(dep.path)
            if p is not None and p.name not in seen:
                seen.append(p.name)
                todo.append(p.name)
    order = list(lock)
    return sorted(seen, key=order.index)


def _stage_json(s: Stage) -> dict[str, Any]:
    run_seed = s.params.get("run.seed")
    key = SEED_KEYS.get(s.base)
    seed = derive_seed(run_seed, s.iteration, key) if key and isinstance(run_seed, int) else None
    return {"name": s.name, "iteration": s.iteration, "cmd": s.cmd, "params_files": list(s.params_files),
            "params": s.params, "run_seed": run_seed, "seed": seed,
            "deps": [{"path": d.path, "md5": d.md5} for d in s.deps], "outs": [o.path for o in s.outs]}


def _artifacts(h: History, it: str, names: list[str], outs_of: list[str]) -> dict[str, dict]:
    """Every dep of the given stages and every out of `outs_of`: hash, size, producer, Parquet rows."""
    lock, producers = h.lock(it), h.producers(it)
    arts: dict[str, dict] = {}

    def add(e: Entry, producer: Stage | None) -> dict:
        return arts.setdefault(e.path, {
            "path": e.path, "md5": e.md5, "size": e.size, "nfiles": e.nfiles, "is_dir": e.is_dir,
            "stage": producer.name if producer else None,
            "iteration": producer.iteration if producer else None, "rows": None, "rows_source": None,
            "stale_in": []})

    for n in outs_of:
        for o in lock[n].outs:
            add(o, lock[n])
    for n in names:
        for d in lock[n].deps:
            art = add(d, producers.get(d.path))
            if art["md5"] != d.md5:
                art["stale_in"].append(n)  # this stage consumed another version than the one recorded
    _parquet_rows(h, arts)
    return arts


def _parquet_rows(h: History, arts: dict[str, dict]) -> None:
    """Row counts from Parquet footers: the DVC cache object with that md5, else the workspace file
    when its size matches the lock; prompt split counts for the prompts table."""
    import duckdb

    local: dict[str, tuple[str, str]] = {}
    for path, a in arts.items():
        if not path.endswith(".parquet"):
            continue
        obj = cache_object(h.root, a["md5"])
        ws = h.root / path
        if obj is not None:
            local[path] = (str(obj), "dvc-cache")
        elif ws.is_file() and a["size"] == ws.stat().st_size:
            local[path] = (str(ws), "workspace")
    if not local:
        return
    con = duckdb.connect()
    files = [f for f, _ in local.values()]
    try:
        counts = dict(con.execute(f"SELECT file_name, num_rows FROM parquet_file_metadata({lit(files)})").fetchall())
    except duckdb.Error:
        counts = {}
    for path, (f, source) in local.items():
        if f in counts:
            arts[path].update(rows=int(counts[f]), rows_source=source)
    prompts = h.layout.rel(h.layout.prompts)
    if prompts in local:
        import polars as pl

        from tasks.data.splits import assignment_hash

        try:
            rows = con.execute(f"SELECT split, count(*) FROM read_parquet({lit(local[prompts][0])}) "
                               "GROUP BY split ORDER BY split").fetchall()
            arts[prompts]["splits"] = {s: int(n) for s, n in rows}
            # which prompt is in which split, as one hash: equal hashes, equal splits
            arts[prompts]["split_sha256"] = assignment_hash(pl.read_parquet(local[prompts][0],
                                                                            columns=["prompt_id", "split"]))
        except (duckdb.Error, pl.exceptions.PolarsError):
            pass


def _ancestry(lock: dict[str, Stage], producers: dict[str, Stage], model_path: str | None) -> list[dict]:
    """The chain of checkpoints behind a model: each with its hash, the stage that made it, the model it
    was initialised from and the one that generated its training data (both from recorded deps)."""
    out, todo, seen = [], [model_path] if model_path else [], set()
    while todo:
        path = todo.pop(0)
        if path in seen or path not in producers:
            continue
        seen.add(path)
        s = producers[path]
        md5 = next(o.md5 for o in s.outs if o.path == path)
        init = next((d.path for d in s.deps if MODEL_DIR.match(d.path)), None)
        gen = lock.get(f"generate@{s.iteration}") if "@" in s.name else None
        parent = next((d.path for d in gen.deps if MODEL_DIR.match(d.path)), None) if gen else None
        data = [d.path for d in s.deps if d.path.endswith(".parquet")]
        out.append({"model": path, "md5": md5, "stage": s.name, "init": init, "parent": parent, "data": data})
        todo += [p for p in (init, parent) if p]
    return out


def _runs(h: History, its: set[str]) -> dict[str, dict]:
    """Per iteration that ran any stage shown: the run record's code revision, package versions and
    decision (so an upstream checkpoint's code is its own iteration's, not the queried one's)."""
    its = sorted(i for i in its if i in h.commits)
    h.prefetch([], [], [(i, h.layout.rel(h.layout.record(i))) for i in its])
    out = {}
    for i in its:
        r = h.record(i)
        out[i] = {"status": r.get("status"), "finished": r.get("finished"), "code": r.get("code"),
                  "packages": r.get("packages"), "gate_passed": (r.get("gate") or {}).get("passed"),
                  "promoted": (r.get("promotion") or {}).get("promoted")}
    return out


def iteration_lineage(root: Path, it: str | int, *, history: History | None = None) -> dict[str, Any]:
    """The recorded chain behind one finished iteration, from prompts to the promotion decision."""
    h = history or History(Path(root))
    it = h.require(it)
    L = h.layout
    h.prefetch([it], ["dvc.lock", L.rel(L.record(it)), L.rel(L.choice(it)), L.rel(L.gate(it)),
                      L.rel(L.eval(it)), L.rel(L.promotion(it)), L.rel(L.threshold(it))])
    lock = h.lock(it)
    if not lock:
        raise WorkspaceError(f"iteration {it}: no dvc.lock at tag {tag_for(it)}.", file=str(h.root),
                             fix="the tag predates any DVC stage; list iterations with `flywheel log`.")
    producers = h.producers(it)
    own = _own_stages(it, lock)
    upstream = sorted({producers[d.path].name for n in own for d in lock[n].deps if d.path in producers} - set(own),
                      key=list(lock).index)
    names = upstream + own
    arts = _artifacts(h, it, own, own)
    record = h.record(it)
    roles = {k: v for k, v in _roles(it, lock, h).items() if v in arts}
    promotion = h.json(it, L.rel(L.promotion(it))) or record.get("promotion")
    return {
        "iteration": it, "tag": tag_for(it), "commit": h.commits[it], "target": None,
        "run": {"seed": next((lock[n].params["run.seed"] for n in names if "run.seed" in lock[n].params), None),
                "status": record.get("status"), "parent": record.get("parent"),
                "next_parent": record.get("next_parent"), "started": record.get("started"),
                "finished": record.get("finished"), "code": record.get("code"), "packages": record.get("packages")},
        "chain": roles,
        "base_source": _base_source(L),
        "choice": h.json(it, L.rel(L.choice(it))) or record.get("choice"),
        "bstar": _bstar(lock.get(f"calibrate@{it}"), h.json(it, L.rel(L.choice(it))) or record.get("choice") or {},
                        h.json(it, L.rel(L.threshold(it)))),
        "gate": h.json(it, L.rel(L.gate(it))) or record.get("gate"),
        "evaluation": h.json(it, L.rel(L.eval(it))) or record.get("eval"),
        "promotion": promotion,
        "stages": {n: _stage_json(lock[n]) for n in names},
        "artifacts": arts,
        "ancestry": _ancestry(lock, producers, roles.get("checkpoint") or roles.get("parent_model")),
        "runs": _runs(h, {lock[n].iteration for n in names}),
    }


def _bstar(calibrate: Stage | None, choice: dict, applied: dict | None) -> dict[str, Any]:
    """How this iteration balanced: the B-STaR reference-code options from the calibrate stage's recorded
    params (their defaults, listed in `predates`, where the lock predates an option), the temperature,
    and the threshold select applied with where it came from (threshold.json; the probe's before it existed)."""
    from tasks.config.recipe import REFERENCE_OPTION_DEFAULTS

    params = calibrate.params if calibrate else {}
    wanted = {**REFERENCE_OPTION_DEFAULTS, "reference_score": 1.0}
    block: dict[str, Any] = {k: params.get(f"calibrate.{k}", d) for k, d in wanted.items()}
    block |= {"predates": [k for k in wanted if f"calibrate.{k}" not in params],
              "calibrated": bool(params.get("calibrate.enabled", choice.get("calibrated"))),
              "temperature": choice.get("temperature"), "probe_threshold": choice.get("threshold"),
              "threshold": (applied or choice).get("threshold"),
              "threshold_source": (applied or {}).get("from", "probe"),
              "fidelity": params.get("calibrate.fidelity") or "legacy",
              "balance_score": choice.get("balance_score"), "runners_up": choice.get("runners_up", [])}
    return block


def _base_source(L) -> dict | None:
    """Where the base model's weights came from, when it was imported from a GGUF file (its hash and
    package or path; written by the `base` stage into the folder, which never changes in a workspace)."""
    from tasks.models.gguf_import import read_source

    return read_source(L.base_model) if L.base_model.is_dir() else None


def _normalise_path(root: Path, query: str) -> str:
    p = Path(query)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(root)
        except ValueError:
            return query
    return p.as_posix().rstrip("/").removeprefix("./")


def _find_hash(h: History, prefix: str) -> list[tuple[str, Stage, Entry]]:
    """(tag iteration, stage, out) for outs whose md5 starts with `prefix`, at every tag (raw-text
    pre-filter, so only locks that mention the prefix are parsed)."""
    h.prefetch(h.iterations, ["dvc.lock"])
    hits = []
    for it in h.iterations:
        if prefix not in (h.text(it, "dvc.lock") or "").lower():
            continue
        for s in h.lock(it).values():
            hits += [(it, s, o) for o in s.outs if (o.md5 or "").lower().startswith(prefix)]
    return hits


def find_artifact(root: Path, query: str) -> dict[str, Any]:
    """Walk back from an iteration id, an artifact path or an md5 prefix to the producing stage,
    its iteration, and the full upstream chain recorded in that iteration's dvc.lock."""
    h = History(Path(root))
    q = query.strip()
    if q.isdigit() and len(q) <= 4:
        return iteration_lineage(h.root, q, history=h)
    path = _normalise_path(h.root, q)
    match: tuple[str, Stage, Entry] | None = None
    also: list[str] = []
    if HEX.fullmatch(q) and "/" not in q:
        hits = _find_hash(h, q.lower())
        distinct = sorted({(o.md5 or "") for _, _, o in hits})
        if len(distinct) > 1:
            raise WorkspaceError(f"hash prefix {q!r} is ambiguous: matches {', '.join(d[:12] for d in distinct)}.",
                                 fix="give more characters of the md5.")
        if hits:  # the first tag that recorded this content, and the stage that produced it there
            match = hits[0]
            also = sorted({f"{s.name}:{o.path}" for _, s, o in hits} - {f"{match[1].name}:{match[2].path}"})
    else:
        for it in reversed(h.iterations):
            p = h.producers(it).get(path)
            if p is not None:
                match = _stage_at(h, p.iteration, p.name, path) or (it, p, next(o for o in p.outs if o.path == path))
                break
    if match is None:
        what = f"artifact with md5 prefix {q!r}" if HEX.fullmatch(q) else f"artifact {path!r}"
        raise WorkspaceError(f"{what} not found in dvc.lock at any iter-* tag.", file=str(h.root),
                             fix=f"list recorded artifacts with `flywheel sql \"SELECT DISTINCT path, md5 FROM "
                                 f"artifacts\" -w {h.root}`.")
    tag_it, stage, out = match
    it = stage.iteration if stage.iteration in h.commits else tag_it
    lineage = iteration_lineage(h.root, it, history=h)  # the producing iteration: run, gate, decision
    lock = h.lock(tag_it)  # the upstream chain as recorded where this content was recorded
    names = _closure(lock, h.producers(tag_it), [stage.name])
    lineage["stages"].update({n: _stage_json(lock[n]) for n in names})
    lineage["artifacts"].update(_artifacts(h, tag_it, names, [stage.name]))
    lineage["runs"] = _runs(h, {lock[n].iteration for n in names} | set(lineage["runs"]))
    lineage["target"] = {"query": query, "path": out.path, "md5": out.md5, "size": out.size, "nfiles": out.nfiles,
                         "stage": stage.name, "iteration": it, "tag": tag_for(tag_it), "upstream": names,
                         "also_produced_by": also}
    return lineage


def _stage_at(h: History, it: str, name: str, path: str) -> tuple[str, Stage, Entry] | None:
    """The stage as recorded at its own iteration's tag (falls back to None if that tag lacks it)."""
    if it not in h.commits:
        return None
    s = h.lock(it).get(name)
    out = next((o for o in s.outs if o.path == path), None) if s else None
    return (it, s, out) if s and out else None


SAMPLE_COLUMNS = ("correct", "reward", "score", "temperature", "seed", "model_hash", "extracted_answer")
ORIGIN_COLUMNS = ("origin", "hint_kind", "hint")  # `self`, None, None without the hint pass
ITERATION_OF = "regexp_extract(filename, '([0-9]{4})/[a-z_]+\\.parquet$', 1)"


def _pair_files(con, files: list[Path]) -> set[str]:
    """The files among `files` that hold preference pairs (select mode `pairs`), read from their schemas."""
    rows = con.execute(f"SELECT DISTINCT file_name FROM parquet_schema({lit([str(f) for f in files])}) "
                       "WHERE name = 'chosen_idx'").fetchall()
    return {r[0] for r in rows}


def _sample_rows(con, scored: Path, prompt_id: str, idx: list[int]) -> dict[int, dict]:
    """The scored rows of one prompt's samples `idx`, by sample_idx (empty when the table is absent)."""
    if not scored.is_file():
        return {}
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({lit(str(scored))})").fetchall()}
    # the hint pass's columns; a table written with hints off has none, and its samples are the model's own
    origin = [("coalesce(origin, 'self')" if "origin" in have else "'self'") + " AS origin",
              *((c if c in have else f"CAST(NULL AS VARCHAR) AS {c}") for c in ("hint_kind", "hint"))]
    rows = con.execute(f"SELECT sample_idx, {', '.join([*SAMPLE_COLUMNS, *origin])} "
                       f"FROM read_parquet({lit(str(scored))}) "
                       f"WHERE prompt_id = {lit(prompt_id)} AND list_contains({lit(idx)}, sample_idx)").fetchall()
    return {r[0]: dict(zip((*SAMPLE_COLUMNS, *ORIGIN_COLUMNS), r[1:])) for r in rows}


def _allocation_row(con, h: History, it: str, prompt_id: str) -> dict | None:
    """Why the prompt got its samples in iteration `it`: its allocation row (adaptive K) with `why`, the
    row as a sentence. None where the iteration has no allocation.parquet (made before adaptive K)."""
    from tasks.config.loading import load_recipe
    from tasks.sampling.allocation import explain

    path = h.layout.allocation(it)
    if not path.is_file():
        return None
    cur = con.execute(f"SELECT * FROM read_parquet({lit(str(path))}) WHERE prompt_id = {lit(prompt_id)}")
    names = [d[0] for d in cur.description]
    found = cur.fetchone()
    if found is None:
        return None
    row = dict(zip(names, found))
    params = h.layout.params(it)
    cfg = load_recipe(params).allocation if params.is_file() else None
    why = explain(row, enabled=cfg.enabled if cfg else True, prior_strength=cfg.prior_strength if cfg else None)
    return {**row, "why": why}


def _found_pairs(con, files: list[str], prompt_id: str, sample_idx: int, rejected_idx: int | None) -> list[dict]:
    """Per iteration, the pairs that hold the sample on either side (or exactly chosen:rejected)."""
    side = (f"chosen_idx = {lit(sample_idx)} AND rejected_idx = {lit(rejected_idx)}" if rejected_idx is not None
            else f"(chosen_idx = {lit(sample_idx)} OR rejected_idx = {lit(sample_idx)})")
    rows = con.execute(f"SELECT {ITERATION_OF} AS it, chosen_idx, rejected_idx, margin "
                       f"FROM read_parquet({lit(files)}, filename=true) WHERE prompt_id = {lit(prompt_id)} AND {side} "
                       "ORDER BY it, chosen_idx, rejected_idx").fetchall()
    out: dict[str, dict] = {}
    for it, c, r, m in rows:
        f = out.setdefault(it, {"iteration": it, "rows": 0, "table": "pairs", "pairs": []})
        f["rows"] += 1
        f["pairs"].append({"chosen_idx": c, "rejected_idx": r, "margin": m})
    return list(out.values())


def example_lineage(root: Path, prompt_id: str, sample_idx: int, *, table: str = "selected",
                    rejected_idx: int | None = None) -> dict[str, Any]:
    """Which finished iterations hold one training example (DuckDB over the workspace's Parquet files),
    its scored row there, and each such iteration's lineage. In a pairs iteration (DPO) the example is a
    pair: it is found by either side (or exactly, with `rejected_idx`), with both sides' scored rows and
    the DPO reference model."""
    import duckdb

    if table not in ("selected", "scored", "samples"):
        raise WorkspaceError(f"unknown table {table!r}.", fix="use selected, scored or samples.")
    if rejected_idx is not None and table != "selected":
        raise WorkspaceError(f"a pair (PROMPT_ID:CHOSEN_IDX:REJECTED_IDX) lives in selected.parquet, not {table}.",
                             field="--example-table", fix="drop --example-table, or give PROMPT_ID:SAMPLE_IDX.")
    h = History(Path(root))
    files = sorted((h.root / "data" / "iterations").glob(f"[0-9][0-9][0-9][0-9]/{table}.parquet"))
    files = [f for f in files if f.parent.name in h.commits]
    con = duckdb.connect()
    pairs = _pair_files(con, files) if files and table == "selected" else set()
    singles = [str(f) for f in files if str(f) not in pairs]
    found: list[dict] = []
    where = f"prompt_id = {lit(prompt_id)} AND sample_idx = {lit(int(sample_idx))}"
    if singles and rejected_idx is None:
        found = [{"iteration": r[0], "rows": int(r[1]), "table": table} for r in con.execute(
            f"SELECT {ITERATION_OF} AS it, count(*) "
            f"FROM read_parquet({lit(singles)}, filename=true, union_by_name=true) WHERE {where} "
            "GROUP BY it ORDER BY it").fetchall()]
    if pairs:
        found = sorted(found + _found_pairs(con, sorted(pairs), prompt_id, int(sample_idx), rejected_idx),
                       key=lambda f: f["iteration"])
    if not found:
        what = f"{prompt_id}:{sample_idx}" + (f":{rejected_idx}" if rejected_idx is not None else "")
        where_looked = f"{table}.parquet" + (" (as a sample, or either side of a pair)" if pairs else "")
        raise WorkspaceError(f"training example {what} not found in any finished iteration's {where_looked}.",
                             file=str(h.root),
                             fix=f"list examples with `flywheel sql \"SELECT * FROM {table} LIMIT 20\" -w {h.root}`.")
    lineages = [iteration_lineage(h.root, f["iteration"], history=h) for f in found]
    for f, lin in zip(found, lineages, strict=True):
        scored = h.layout.scored(f["iteration"])
        f["allocation"] = _allocation_row(con, h, f["iteration"], prompt_id)
        if f["table"] != "pairs":
            f["sample"] = _sample_rows(con, scored, prompt_id, [int(sample_idx)]).get(int(sample_idx))
            continue
        rows = _sample_rows(con, scored, prompt_id, sorted({i for p in f["pairs"]
                                                             for i in (p["chosen_idx"], p["rejected_idx"])}))
        for pair in f["pairs"]:
            pair["chosen"], pair["rejected"] = rows.get(pair["chosen_idx"]), rows.get(pair["rejected_idx"])
        ref = lin["chain"].get("reference_model")
        f["reference_model"] = {"path": ref, "md5": lin["artifacts"][ref]["md5"]} if ref else None
    return {"example": {"prompt_id": prompt_id, "sample_idx": int(sample_idx), "table": table,
                        "rejected_idx": rejected_idx}, "found_in": found, "lineages": lineages}


def iteration_log(root: Path) -> list[dict[str, Any]]:
    """One row per finished iteration (run records as committed at each tag)."""
    h = History(Path(root))
    L = h.layout
    h.prefetch([], [], [(it, L.rel(L.record(it))) for it in h.iterations])
    rows = []
    for it in h.iterations:
        r = h.record(it)
        ev, choice, gate, promo = (r.get(k) or {} for k in ("eval", "choice", "gate", "promotion"))
        k_key = pass_at_k_entry(ev)[0]
        rows.append({"iteration": it, "commit": h.commits[it], "finished": r.get("finished"),
                     "status": r.get("status"), "parent": r.get("parent"),
                     "temperature": choice.get("temperature"), "threshold": choice.get("threshold"),
                     "gate": gate.get("passed") if gate else None, "gate_failures": gate.get("failures") or [],
                     "pass@1": ev.get("pass@1"), "pass@k_name": k_key, "pass@k": ev.get(k_key) if k_key else None,
                     "promoted": promo.get("promoted") if promo else None, "reason": promo.get("reason"),
                     "next_parent": r.get("next_parent")})
    return rows


__all__ = ["example_lineage", "find_artifact", "iteration_lineage", "iteration_log"]
