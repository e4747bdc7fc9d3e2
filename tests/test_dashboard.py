"""The dashboard: PNG and self-contained HTML from iteration records."""

from __future__ import annotations

import polars as pl

from tasks.audit.dashboard import metrics_frame, write_dashboard


def _records():
    out = []
    for i, (p1, cov) in enumerate([(0.2, None), (0.3, 0.5), (0.45, 0.6)]):
        metrics = None if i == 0 else {"pass@1": p1, "pass@8": p1 + 0.2, "coverage": cov, "balance_score": cov / 2,
                                       "distinct_correct_ratio": 0.9, "n_selected": 100,
                                       **{f"correct_hist_{j}": (1.0 if j == i else 0.0) for j in range(9)}}
        out.append({"iteration": f"{i:04d}", "status": "completed", "parent": None,
                    "choice": None if i == 0 else {"temperature": 0.7 + i / 10, "threshold": 0.9},
                    "metrics": metrics, "gate": {"passed": True}, "eval": {"pass@1": p1, "pass@8": p1 + 0.1},
                    "promotion": {"promoted": True}, "next_parent": f"{i:04d}"})
    return out


def test_metrics_frame_has_one_row_per_iteration():
    frame = metrics_frame(_records())
    assert frame["iteration_n"].to_list() == [0, 1, 2]
    assert frame["test_pass@1"].to_list() == [0.2, 0.3, 0.45]
    assert frame["pass@k"].to_list() == [None, 0.5, 0.65]
    assert frame.filter(pl.col("iteration_n") == 2)["correct_hist_2"].item() == 1.0


def test_dashboard_writes_png_and_self_contained_html(tmp_path):
    paths = write_dashboard(_records(), tmp_path, title="demo <run>")
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "demo &lt;run&gt;" in page
    assert page.count("<tr>") == 4  # header + three iterations
    assert "http" not in page.split("<body>", 1)[1]  # nothing loaded from elsewhere


def test_dashboard_on_an_empty_workspace(tmp_path):
    paths = write_dashboard([], tmp_path)
    assert paths["png"].stat().st_size > 0 and "<table>" in paths["html"].read_text()


def test_tail_panel_points(tmp_path):
    """One point per iteration per tail series where the hint pass ran; only hard_prompts_solved otherwise."""
    import json

    plain = _records()
    for i, rec in enumerate(plain[1:], 1):
        rec["metrics"]["hard_prompts_solved"] = 0.1 * i
    paths = write_dashboard(plain, tmp_path / "plain")
    tail = json.loads(paths["points"].read_text())["hard tail by origin"]
    assert list(tail) == ["hard prompts solved (first pass)"]
    assert [p for p in tail["hard prompts solved (first pass)"] if p[1] == p[1]] == [[1, 0.1], [2, 0.2]]

    hinted = _records()
    for i, rec in enumerate(hinted[1:], 1):
        rec["metrics"] |= {"hard_prompts_solved": 0.1 * i, "hard_prompts_solved_hinted": 0.2 * i,
                           "hard_prompts_solved_rationalized": 0.05, "hard_prompts_solved_any": 0.3 * i,
                           "hint_rescued": 0.5, "hint_prompts": 7, "solved_d3_self": 0.4, "solved_d3_any": 0.6,
                           "solved_d4_self": 0.1 * i, "solved_d4_any": 0.25 * i}
    paths = write_dashboard(hinted, tmp_path / "hinted")
    points = json.loads(paths["points"].read_text())
    tail = points["hard tail by origin"]
    assert set(tail) == {"hard prompts solved (first pass)", "... by a rationalized sample", "... by a hinted sample",
                         "... by any sample", "hinted prompts rescued", "difficulty 4 solved (first pass)",
                         "difficulty 4 solved (any)"}  # the hardest level only
    for series in tail.values():
        assert [x for x, y in series if y == y] == [1, 2]  # one point per iteration with metrics (NaN: the baseline)
    assert [y for _, y in tail["difficulty 4 solved (any)"] if y == y] == [0.25, 0.5]
    assert points["samples per prompt"] == {}  # adaptive K off: nothing to draw
    page = paths["html"].read_text()
    assert "<th>hint_rescued</th>" in page and "<th>hint_prompts</th>" in page
