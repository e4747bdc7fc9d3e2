"""Iteration bookkeeping: which iteration comes next, starting one, and recording a finished one."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

from tasks.audit.report import pass_at_k_entry
from tasks.config.loading import load_recipe, recipe_to_yaml
from tasks.metrics.costs import iteration_cost
from tasks.numerics.state import record as numerics_record
from tasks.pipeline import BASELINE, IterationVars, history_for, read_iteration_vars, write_iteration_vars
from tasks.placement.dispatch import dispatched_device
from tasks.workspace.atomic import read_json, write_json, write_text
from tasks.workspace.layout import Layout, iteration_id, tag_for
from tasks.workspace.provenance import code_revision, compute_device, package_versions
from tasks.workspace.recovery import mark_progress
from tasks.workspace.versioning import commit_and_tag, git, git_ok, push, tags


@dataclass(frozen=True)
class NextIteration:
    it: str
    vars: IterationVars
    resuming: bool


def current_parent(layout: Layout) -> str:
    """The model the next iteration samples from: the last promoted one."""
    table = read_iteration_vars(layout)
    done = [it for it in table if tag_for(it) in set(tags(layout.root))]
    if not done:
        return BASELINE
    last = done[-1]
    record = read_json(layout.record(last))
    return record["next_parent"]


def plan_next(layout: Layout, mode: str) -> NextIteration:
    """Resume the last declared iteration if it was never tagged, else declare a new one."""
    table = read_iteration_vars(layout)
    finished = set(tags(layout.root))
    if table:
        last = list(table)[-1]
        if tag_for(last) not in finished:
            return NextIteration(last, table[last], resuming=True)
    parent = current_parent(layout)
    it = iteration_id(int(list(table)[-1]) + 1 if table else 1)
    rnd = (table[list(table)[-1]].round + 1) if table else 1
    init = parent if mode == "continue" else BASELINE
    first = next(iter(table), it)
    # adaptive K learns from the previous iteration's samples; without it generate depends on nothing new
    history = history_for(layout, load_recipe(layout.recipe), list(table)[-1] if table else None)
    return NextIteration(it, IterationVars(parent=parent, init=init, round=rnd, first=first, history=history),
                         resuming=False)


def start_iteration(layout: Layout, nxt: NextIteration) -> None:
    """Freeze the workspace recipe as this iteration's params and declare it to dvc.yaml's foreach."""
    if nxt.resuming:
        return
    recipe = load_recipe(layout.recipe)
    write_text(layout.params(nxt.it), recipe_to_yaml(recipe))
    table = read_iteration_vars(layout)
    table[nxt.it] = nxt.vars
    write_iteration_vars(layout, table)


def ungate(layout: Layout, it: str) -> None:
    """The data gate failed: stop declaring train/evaluate/promote for this iteration."""
    table = read_iteration_vars(layout)
    table[it] = replace(table[it], gated=False)
    write_iteration_vars(layout, table)


def _params_of(layout: Layout, it: str) -> Path:
    return layout.params(it) if layout.params(it).is_file() else layout.recipe


def _read_if(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def iteration_summary(layout: Layout, it: str) -> dict:
    """Metrics, gate, evaluation and promotion of one iteration, read from its outputs."""
    v = read_iteration_vars(layout).get(it)
    promotion = _read_if(layout.promotion(it))
    gate = _read_if(layout.gate(it))
    if promotion is None and v is not None:
        reason = "data gate failed: " + "; ".join((gate or {}).get("failures", []))
        promotion = {"promoted": False, "reason": reason, "next_parent": v.parent, "candidate": it, "parent": v.parent}
    return {
        "iteration": it,
        "parent": v.parent if v else None,
        "choice": _read_if(layout.choice(it)),
        "metrics": _read_if(layout.metrics(it)),
        "gate": gate,
        "eval": _read_if(layout.eval(it)),
        "promotion": promotion,
    }


def _committed_record(layout: Layout, it: str) -> dict | None:
    """The iteration's record when HEAD already commits it unchanged: a run killed between the
    commit and the tag. Its resumption then only pushes and tags, instead of committing again."""
    rel = layout.rel(layout.record(it))
    if not layout.record(it).is_file() or git(layout.root, "ls-tree", "--name-only", "HEAD", "--", rel) != rel:
        return None
    return read_json(layout.record(it)) if git_ok(layout.root, "diff", "--quiet", "HEAD", "--", rel) else None


def _title(it: str, record: dict) -> str:
    verdict = "promoted" if record["promotion"] and record["promotion"]["promoted"] else "held"
    return "baseline (warm-up)" if it == BASELINE else f"iteration {it}: {record['status']}, {verdict}"


def finish_iteration(layout: Layout, it: str, *, started: str, status: str) -> dict:
    """Write the run record, push data to the DVC remote, then commit and tag (in that order, so a
    tag never points at data the remote lacks)."""
    if (committed := _committed_record(layout, it)) is not None:
        mark_progress(layout, f"finish@{it}")
        push(layout.root)
        commit_and_tag(layout.root, _title(it, committed), tag_for(it))
        return committed
    summary = iteration_summary(layout, it)
    record = {
        **summary,
        "status": status,
        "next_parent": summary["promotion"]["next_parent"] if summary["promotion"] else BASELINE,
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code": code_revision(),
        "packages": package_versions(),
        "device": dispatched_device(layout, it) or compute_device(),  # a GPU worker's, when a stage ran there
        "numerics": numerics_record(load_recipe(_params_of(layout, it)).numerics),  # what the stages were pinned to
    }
    record["cost"] = iteration_cost(layout, it, record["device"])  # wall time, tokens, memory (tasks/metrics/costs.py)
    mark_progress(layout, f"finish@{it}")
    write_json(layout.record(it), record)
    write_plot_data(layout)
    push(layout.root)
    commit_and_tag(layout.root, _title(it, record), tag_for(it))
    return record


PLOT_POOL_KEYS = ("pass@1", "coverage", "distinct_correct_ratio", "balance_score", "temperature", "threshold")


def write_plot_data(layout: Layout) -> None:
    """data/plots/{eval,pool}.csv: one row per iteration, for `dvc plots show`."""
    rows = ["iteration,pass@1,pass@k"]
    for path in sorted((layout.root / "data" / "iterations").glob("*/eval.json")):
        ev = read_json(path)
        pk = pass_at_k_entry(ev)[1]
        pk = "" if pk is None else pk
        rows.append(f"{int(path.parent.name)},{ev['pass@1']},{pk}")
    write_text(layout.root / "data" / "plots" / "eval.csv", "\n".join(rows) + "\n")
    pool = ["iteration," + ",".join(PLOT_POOL_KEYS)]
    for path in sorted((layout.root / "data" / "iterations").glob("*/metrics.json")):
        m = read_json(path)
        pool.append(f"{int(path.parent.name)}," + ",".join(str(m.get(k, "")) for k in PLOT_POOL_KEYS))
    write_text(layout.root / "data" / "plots" / "pool.csv", "\n".join(pool) + "\n")


def load_records(layout: Layout) -> list[dict]:
    return [read_json(p) for p in sorted(layout.records.glob("[0-9][0-9][0-9][0-9].json"))]
