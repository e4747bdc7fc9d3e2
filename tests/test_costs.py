"""The cost report of each iteration (tasks/metrics/costs.py): in the run record, `flywheel status`, the
Prefect markdown, the dashboard and `flywheel sql`, and never in a versioned artifact."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest
import yaml

from tasks.audit.report import iteration_markdown
from tasks.metrics.costs import iteration_cost, own_peak_rss_mb, record_stage
from tasks.pipeline import BOOTSTRAP_STAGES, ITERATION_STAGES
from tasks.workspace.layout import Layout
from tests.conftest import MICRO_RECIPE, ROOT, flywheel


def _record(ws, it: str) -> dict:
    return json.loads((ws / "records" / f"{it}.json").read_text())


def _tokens(path) -> int:
    return int(pl.read_parquet(path)["n_tokens"].sum())


def _rate_matches(rate: float, n: int, compute_s: float) -> bool:
    """`rate` is n / the unrounded compute time, recorded to 0.01 s (and the rate to 0.1): a stage of
    0.4 s is 1.25% off its rounded time, so the bound comes from the rounding, not a fixed share."""
    return n / (compute_s + 0.005) - 0.05 <= rate <= n / max(compute_s - 0.005, 1e-9) + 0.05


def test_each_iteration_records_what_its_stages_cost(micro_workspace):
    for it, stages in (("0000", BOOTSTRAP_STAGES), ("0001", ITERATION_STAGES), ("0002", ITERATION_STAGES)):
        cost = _record(micro_workspace, it)["cost"]
        assert list(cost["stages"]) == sorted(stages)
        assert cost["wall_s"] == pytest.approx(sum(s["wall_s"] for s in cost["stages"].values()), abs=0.01)
        assert all(s["wall_s"] >= s["compute_s"] > 0 for s in cost["stages"].values())
        assert cost["device"] == "cpu" and cost["gpus"] == 0 and cost["gpu_hours"] is None
        assert cost["peak_rss_mb"] == max(s["peak_rss_mb"] for s in cost["stages"].values()) > 50
        assert {s["process"] for s in cost["stages"].values()} == {"flow"}  # the micro recipe: no stage processes
    d = micro_workspace / "data" / "iterations" / "0001"
    cost = _record(micro_workspace, "0001")["cost"]
    gen, ev = cost["stages"]["generate"], cost["stages"]["evaluate"]
    assert gen["tokens_generated"] == _tokens(d / "samples.parquet") > 0
    assert ev["tokens_generated"] == _tokens(d / "eval_samples.parquet") > 0
    assert _rate_matches(gen["tokens_per_s"], gen["tokens_generated"], gen["compute_s"])
    assert cost["tokens_generated"] == gen["tokens_generated"] + ev["tokens_generated"]
    train = cost["stages"]["train"]
    steps, batch = MICRO_RECIPE["train"]["max_steps"], MICRO_RECIPE["train"]["batch_size"]
    assert train["train_steps"] == cost["train_steps"] == steps
    # every batch holds `batch` examples of at least one prompt token and one answer token
    assert train["train_tokens"] >= steps * batch * 2
    assert _rate_matches(train["train_tokens_per_s"], train["train_tokens"], train["compute_s"])
    warmup = _record(micro_workspace, "0000")["cost"]["stages"]["warmup"]
    assert warmup["train_steps"] == MICRO_RECIPE["warmup"]["max_steps"] and warmup["train_tokens"] > 0


def test_no_versioned_artifact_holds_the_cost(micro_workspace):
    lock = yaml.safe_load((micro_workspace / "dvc.lock").read_text())
    outs = [micro_workspace / o["path"] for s in lock["stages"].values() for o in s.get("outs", [])]
    files = [f for o in outs for f in ([o] if o.is_file() else o.rglob("*")) if f.is_file()]
    assert len(files) > 20
    assert not [f for f in files if b"peak_rss_mb" in f.read_bytes() or b"tokens_per_s" in f.read_bytes()]


def test_status_markdown_and_dashboard_show_the_cost(micro_workspace, tmp_path):
    rows = json.loads(flywheel("status", "-w", str(micro_workspace), "--json").stdout)
    for row in rows:
        cost = _record(micro_workspace, row["iteration"])["cost"]
        assert row["wall_s"] == cost["wall_s"] and row["peak_rss_mb"] == cost["peak_rss_mb"]
        assert row["tokens_generated"] == cost["tokens_generated"]
    table = flywheel("status", "-w", str(micro_workspace)).stdout
    assert "wall_s" in table and "gen_tok/s" in table and "peak_MB" in table
    record = _record(micro_workspace, "0001")
    md = iteration_markdown(record)
    assert f"**Cost:** {record['cost']['wall_s']:.3f} s wall on cpu" in md
    assert sum(line.startswith(f"| {s} |") for s in ITERATION_STAGES for line in md.splitlines()) == 8
    flywheel("report", "-w", str(micro_workspace), "--out", str(tmp_path))
    html = (tmp_path / "dashboard.html").read_text()
    assert "<h2>Cost</h2>" in html and f"<td>{record['cost']['wall_s']:.3f}</td>" in html


def test_sql_queries_the_cost(micro_workspace):
    out = flywheel("sql", "-w", str(micro_workspace), "--json",
                   "SELECT iteration, stage, wall_s, tokens_generated FROM stage_costs ORDER BY iteration, stage").stdout
    rows = json.loads(out)
    assert len(rows) == len(BOOTSTRAP_STAGES) + 2 * len(ITERATION_STAGES)
    for r in rows:
        entry = _record(micro_workspace, r["iteration"])["cost"]["stages"][r["stage"]]
        assert r["wall_s"] == entry["wall_s"] and r["tokens_generated"] == entry.get("tokens_generated")
    totals = json.loads(flywheel("sql", "-w", str(micro_workspace), "--json",
                                 "SELECT iteration, wall_s, train_tokens, device FROM costs ORDER BY 1").stdout)
    assert [t["wall_s"] for t in totals] == [_record(micro_workspace, t["iteration"])["cost"]["wall_s"] for t in totals]
    assert {t["device"] for t in totals} == {"cpu"}


def test_totals_and_gpu_hours(tmp_path, monkeypatch):
    layout = Layout(tmp_path)
    record_stage(layout, "0003", "generate", {"wall_s": 30.0, "compute_s": 20.0, "peak_rss_mb": 900.0,
                                              "tokens_generated": 4000, "process": "stage"})
    record_stage(layout, "0003", "train", {"wall_s": 90.0, "compute_s": 80.0, "peak_rss_mb": 1500.0,
                                           "train_tokens": 16000, "train_steps": 40, "process": "stage"})
    record_stage(layout, "0003", "train", {"wall_s": 60.0, "compute_s": 50.0, "peak_rss_mb": 1400.0,
                                           "train_tokens": 10000, "train_steps": 40, "process": "stage"})  # a re-run
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    cost = iteration_cost(layout, "0003", "cuda:NVIDIA H200")
    assert (cost["wall_s"], cost["tokens_per_s"], cost["train_tokens_per_s"]) == (90.0, 200.0, 200.0)
    assert (cost["peak_rss_mb"], cost["train_steps"], cost["gpus"]) == (1400.0, 40, 2)
    assert cost["gpu_hours"] == pytest.approx(90.0 * 2 / 3600, abs=1e-4)
    assert iteration_cost(layout, "0004", "cpu") is None  # nothing measured: an older record has no cost


def test_peak_memory_is_the_process_own_high_water_mark():
    """VmHWM of the process, or of a child it waited for: never the parent's pages a child held
    between fork and exec (which ru_maxrss alone would report)."""
    code = ("import sys; from tasks.metrics.costs import own_peak_rss_mb; b = bytearray({mb} * 2**20); "
            "b[::4096] = b'x' * len(b[::4096]); print(own_peak_rss_mb(children=True))")

    def child_peak(mb: int) -> float:
        return float(subprocess.run([sys.executable, "-c", code.format(mb=mb)], capture_output=True, text=True,
                                    check=True, cwd=ROOT).stdout)

    ballast = bytearray(400 * 2**20)  # this process grows past what the children will use
    ballast[::4096] = b"x" * len(ballast[::4096])
    small, big = child_peak(10), child_peak(300)
    assert small < 200 and 300 <= big < 400
    assert own_peak_rss_mb() >= 400
    grand = ("import subprocess, sys; from tasks.metrics.costs import own_peak_rss_mb; "
             f"subprocess.run([sys.executable, '-c', {code.format(mb=250)!r}], stdout=subprocess.DEVNULL, check=True); "
             "print(own_peak_rss_mb(children=True))")
    peak = float(subprocess.run([sys.executable, "-c", grand], capture_output=True, text=True, check=True,
                                cwd=ROOT).stdout)
    assert 250 <= peak < 400  # the grandchild's own peak, counted by the process that waited for it
