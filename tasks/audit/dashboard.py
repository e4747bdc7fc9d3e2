"""The per-workspace dashboard: a PNG of the B-STaR metrics over iterations, a self-contained HTML page
with the iterations and their cost, and beside them the points each plot holds (dashboard.plot.json)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import polars as pl

from tasks.audit.report import cost_row, pass_at_k_entry, status_row
from tasks.workspace.atomic import write_text

CURVES = {
    "held-out test": [("test_pass@1", "pass@1 (greedy)"), ("test_pass@k", "pass@K")],
    "training pool (exploration)": [("pass@1", "pass@1"), ("pass@k", "pass@K"), ("coverage", "coverage"),
                                    ("distinct_correct_ratio", "distinct-correct ratio"),
                                    ("balance_score", "balance score")],
    "chosen sampling": [("temperature", "temperature"), ("threshold", "reward threshold")],
}
# The bottom row beside the histogram: who solves the hard tail (the hint pass's origins, where it ran)
# and how many samples prompts got (adaptive K, where it ran). A series is drawn only where its key exists.
TAIL_TITLE = "hard tail by origin"
TAIL = [("hard_prompts_solved", "hard prompts solved (first pass)"),
        ("hard_prompts_solved_rationalized", "... by a rationalized sample"),
        ("hard_prompts_solved_hinted", "... by a hinted sample"), ("hard_prompts_solved_any", "... by any sample"),
        ("hint_rescued", "hinted prompts rescued")]
K_PANEL = {"samples per prompt": [("k_min_used", "fewest"), ("k_mean", "mean"), ("k_max_used", "most")]}


def tail_series(frame: pl.DataFrame) -> list[tuple[str, str]]:
    """The tail panel's series: the hard-prompt shares, plus the hardest difficulty level of the pool
    (solved_d{d}_self / _any), which `hard_prompts` misses when the curriculum brings it in late."""
    levels = sorted(int(c[len("solved_d"):-len("_any")]) for c in frame.columns
                    if c.startswith("solved_d") and c.endswith("_any") and c[len("solved_d"):-len("_any")].isdigit())
    hardest = [(f"solved_d{levels[-1]}_self", f"difficulty {levels[-1]} solved (first pass)"),
               (f"solved_d{levels[-1]}_any", f"difficulty {levels[-1]} solved (any)")] if levels else []
    return TAIL + hardest


def metrics_frame(records: list[dict]) -> pl.DataFrame:
    """One row per iteration: the status row plus every pool metric of metrics.json."""
    rows = []
    for rec in records:
        metrics = rec.get("metrics") or {}
        k_key = pass_at_k_entry(metrics)[0]
        row = {**status_row(rec), **{k: v for k, v in metrics.items() if isinstance(v, int | float)}}
        row["pass@k"] = metrics.get(k_key) if k_key else None
        row["iteration_n"] = int(rec["iteration"])
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def _histogram(frame: pl.DataFrame) -> tuple[list[int], list[str], list[list[float]]]:
    cols = sorted((c for c in frame.columns if c.startswith("correct_hist_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    hist = frame.filter(pl.col(cols[0]).is_not_null()) if cols else frame.clear()
    return hist["iteration_n"].to_list() if cols else [], cols, [hist[c].fill_null(0).to_list() for c in cols]


def render_png(frame: pl.DataFrame) -> bytes:
    return render_figure(frame)[0]


def render_figure(frame: pl.DataFrame) -> tuple[bytes, dict]:
    """The PNG, and per panel the (iteration, value) points of each series as drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(2, 3, figsize=(18, 8))
    x = frame["iteration_n"].to_list() if frame.height else []
    panels = {**CURVES, TAIL_TITLE: tail_series(frame), **K_PANEL}
    for ax, (title, series) in zip([axes.flat[i] for i in (0, 1, 2, 4, 5)], panels.items()):
        for col, label in series:
            if col in frame.columns and frame[col].drop_nulls().len():
                ax.plot(x, frame[col].cast(pl.Float64, strict=False).to_list(), marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if ax.lines:
            ax.legend(fontsize=8)
    ax = axes.flat[3]
    its, cols, values = _histogram(frame)
    bottom = [0.0] * len(its)
    cmap = plt.get_cmap("viridis", max(len(cols), 1))
    for j, (col, vals) in enumerate(zip(cols, values)):
        ax.bar(its, vals, bottom=bottom, color=cmap(j), label=col.rsplit("_", 1)[1])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_title("correct samples per prompt (share of prompts)")
    ax.set_xlabel("iteration")
    if cols:
        ax.legend(title="# correct", fontsize=7, ncol=2)
    fig.suptitle("flywheel: exploration and exploitation over iterations")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    points = {a.get_title(): {**{line.get_label(): line.get_xydata().tolist() for line in a.lines},
                              **{c.get_label(): [[r.get_x() + r.get_width() / 2, r.get_height()] for r in c]
                                 for c in a.containers}}
              for a in axes.flat}
    plt.close(fig)
    return buf.getvalue(), points


def render_html(frame: pl.DataFrame, png: bytes, title: str) -> str:
    cols = [c for c in ("iteration", "status", "parent", "temperature", "threshold", "pass@1", "pass@k", "coverage",
                        "distinct_correct_ratio", "balance_score", "n_selected", "hard_prompts_solved",
                        "hard_prompts_solved_any", "hint_prompts", "hint_rescued", "gate", "test_pass@1",
                        "test_pass@k", "promoted") if c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in cols) + "</tr>"
                   for r in frame.iter_rows(named=True))
    cost_cols = [c for c in cost_row({}) if c in frame.columns and frame[c].drop_nulls().len()]
    cost = ""
    if cost_cols:
        cost_head = "".join(f"<th>{html.escape(c)}</th>" for c in ("iteration", *cost_cols))
        cost_body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in ("iteration", *cost_cols))
                            + "</tr>" for r in frame.iter_rows(named=True))
        cost = f"<h2>Cost</h2><table><tr>{cost_head}</tr>{cost_body}</table>"
    img = base64.b64encode(png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style>
</head><body><h1>{html.escape(title)}</h1><img alt="metrics over iterations" src="data:image/png;base64,{img}">
<h2>Iterations</h2><table><tr>{head}</tr>{body}</table>{cost}</body></html>
"""


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def write_dashboard(records: list[dict], out_dir: Path, title: str = "flywheel report") -> dict[str, Path]:
    frame = metrics_frame(records)
    png, points = render_figure(frame)
    out_dir.mkdir(parents=True, exist_ok=True)
    png_path = out_dir / "dashboard.png"
    tmp = png_path.with_suffix(".png.tmp")
    tmp.write_bytes(png)
    tmp.replace(png_path)
    html_path = write_text(out_dir / "dashboard.html", render_html(frame, png, title))
    points_path = write_text(out_dir / "dashboard.plot.json", json.dumps(points, indent=1, sort_keys=True) + "\n")
    return {"png": png_path, "html": html_path, "points": points_path}
