"""Human-readable summaries of iterations (Prefect markdown artifacts, `flywheel status`)."""

from __future__ import annotations

import re
from pathlib import Path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "—" if v is None else str(v)


def pass_at_k_entry(ev: dict) -> tuple[str | None, float | None]:
    """The sampled pass@K figure of an eval/metrics dict, whose key depends on K (e.g. pass@8)."""
    for key, value in ev.items():
        if re.fullmatch(r"pass@\d+", key) and key != "pass@1" and not isinstance(value, dict):
            return key, value
    return None, None


def status_row(record: dict) -> dict:
    """One flat row per iteration: the figures people compare night to night."""
    ev = record.get("eval") or {}
    metrics = record.get("metrics") or {}
    choice = record.get("choice") or {}
    promo = record.get("promotion") or {}
    pass_k = pass_at_k_entry(ev)[1]
    return {
        "iteration": record["iteration"], "status": record.get("status"), "parent": record.get("parent"),
        "finished": record.get("finished"), "temperature": choice.get("temperature"),
        "threshold": choice.get("threshold"), "train_coverage": metrics.get("coverage"),
        "selected": metrics.get("n_selected"), "gate": (record.get("gate") or {}).get("passed"),
        "test_pass@1": ev.get("pass@1"), "test_pass@k": pass_k,
        "promoted": promo.get("promoted"), "next_parent": record.get("next_parent"),
        **cost_row(record),
    }


def cost_row(record: dict) -> dict:
    """The iteration's cost totals (tasks/metrics/costs.py); None where the record predates them."""
    cost = record.get("cost") or {}
    return {"wall_s": cost.get("wall_s"), "tokens_generated": cost.get("tokens_generated"),
            "gen_tokens_per_s": cost.get("tokens_per_s"), "train_tokens": cost.get("train_tokens"),
            "train_tokens_per_s": cost.get("train_tokens_per_s"), "train_steps": cost.get("train_steps"),
            "peak_rss_mb": cost.get("peak_rss_mb"), "gpu_hours": cost.get("gpu_hours")}


COST_COLUMNS = ("wall_s", "compute_s", "peak_rss_mb", "tokens_generated", "tokens_per_s", "train_tokens",
                "train_tokens_per_s", "train_steps", "process")


def cost_markdown(record: dict) -> list[str]:
    """The cost report as Markdown lines: totals, then one row per stage."""
    cost = record.get("cost")
    if not cost:
        return []
    gpu = f", {cost['gpu_hours']} GPU-hours on {cost['gpus']} GPU(s)" if cost.get("gpu_hours") else ""
    lines = ["", f"**Cost:** {_fmt(cost['wall_s'])} s wall on {cost.get('device')}{gpu}; "
                 f"{_fmt(cost.get('tokens_generated'))} tokens generated ({_fmt(cost.get('tokens_per_s'))} tokens/s), "
                 f"{_fmt(cost.get('train_tokens'))} training tokens ({_fmt(cost.get('train_tokens_per_s'))} tokens/s, "
                 f"{_fmt(cost.get('train_steps'))} steps), peak RSS {_fmt(cost.get('peak_rss_mb'))} MB", "",
             "| stage | " + " | ".join(COST_COLUMNS) + " |", "|---" * (len(COST_COLUMNS) + 1) + "|"]
    lines += [f"| {stage} | " + " | ".join(_fmt(entry.get(c)) for c in COST_COLUMNS) + " |"
              for stage, entry in cost["stages"].items()]
    return lines


def iteration_markdown(record: dict, dashboard: Path | None = None, data_docs: Path | None = None) -> str:
    row = status_row(record)
    lines = [f"# flywheel iteration {record['iteration']}: {record.get('status')}", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in row.items() if k != "iteration"]
    promo = record.get("promotion") or {}
    lines += ["", f"**Decision:** {'promoted' if promo.get('promoted') else 'held'}: {promo.get('reason', '—')}"]
    gate = record.get("gate") or {}
    if gate.get("failures"):
        lines += ["", "**Gate failures:**", *[f"- {f}" for f in gate["failures"]]]
    lines += cost_markdown(record)
    if dashboard is not None:
        lines += ["", f"Dashboard (all iterations): [{dashboard.name}](file://{dashboard})"]
    if data_docs is not None and data_docs.is_file():
        lines += ["", f"Data gate report (Great Expectations Data Docs): [{data_docs.name}](file://{data_docs})"]
    return "\n".join(lines) + "\n"
