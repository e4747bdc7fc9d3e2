"""`flywheel report` (flywheel/audit_cmd.py): the files it writes, and what their plots hold."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import flywheel


def _records(ws) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((ws / "records").glob("[0-9][0-9][0-9][0-9].json"))]


def test_report_writes_the_dashboard_and_one_point_per_iteration(micro_workspace, tmp_path):
    out = tmp_path / "report"
    proc = flywheel("report", "-w", str(micro_workspace), "--out", str(out))
    assert proc.stdout.strip() == f"Wrote {out / 'dashboard.png'} and {out / 'dashboard.html'}"
    assert sorted(p.name for p in out.iterdir()) == ["dashboard.html", "dashboard.plot.json", "dashboard.png"]
    assert (out / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "dashboard.html").read_text()
    assert "data:image/png;base64," in html and html.count("<tr>") == 2 * (1 + len(_records(micro_workspace)))
    points = json.loads((out / "dashboard.plot.json").read_text())
    records = _records(micro_workspace)
    test = points["held-out test"]["pass@1 (greedy)"]
    assert test == [[int(r["iteration"]), pytest.approx(r["eval"]["pass@1"])] for r in records]  # 0000, 0001, 0002
    assert [r["iteration"] for r in records if r.get("metrics")] == ["0001", "0002"]  # the baseline has no pool

    def drawn(series: list[list[float]]) -> list[list[float]]:  # NaN: the baseline's point, not drawn
        return [[x, y] for x, y in series if not math.isnan(y)]

    for label, key in (("coverage", "coverage"), ("balance score", "balance_score")):
        series = points["training pool (exploration)"][label]
        assert [x for x, _ in series] == [0, 1, 2]
        assert drawn(series) == [[int(r["iteration"]), pytest.approx(r["metrics"][key])] for r in records[1:]]
    chosen = points["chosen sampling"]["temperature"]
    assert drawn(chosen) == [[int(r["iteration"]), pytest.approx(r["choice"]["temperature"])] for r in records[1:]]
    hist = points["correct samples per prompt (share of prompts)"]
    assert hist and all([x for x, _ in bars] == [1, 2] for bars in hist.values())


def test_report_by_default_writes_into_the_workspace(micro_workspace):
    before = (micro_workspace / "reports" / "dashboard.plot.json").read_text()
    flywheel("report", "-w", str(micro_workspace))
    after = json.loads((micro_workspace / "reports" / "dashboard.plot.json").read_text())
    assert after == json.loads(before)  # the flow wrote the same plots after the last iteration
    assert len(after["held-out test"]["pass@1 (greedy)"]) == len(_records(micro_workspace))
