"""The auditors' SQL views, and the three example queries of the README's Auditing section."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from bench.lineage_speed import synthesize
from tasks.audit.sql import connect
from tests.conftest import ROOT, flywheel, git


def readme_queries() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Auditing", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


def test_readme_has_three_queries():
    assert len(readme_queries()) == 3


def test_readme_queries_run_and_return_rows(micro_workspace):
    held, checkpoints, per_difficulty = (
        json.loads(flywheel("sql", q, "-w", str(micro_workspace), "--json").stdout) for q in readme_queries())
    records = {it: json.loads(git(micro_workspace, "show", f"iter-{it}:records/{it}.json"))
               for it in ("0001", "0002")}
    # 1: one row per decided iteration, held first, with the recorded reason
    assert [r["iteration"] for r in held] == sorted(records, key=lambda it: (records[it]["promotion"]["promoted"], it))
    for r in held:
        assert r["reason"] == records[r["iteration"]]["promotion"]["reason"]
    # 2: checkpoint md5 as dvc.lock recorded it at the tag, code commit from the run record
    promoted = [it for it, rec in records.items() if rec["promotion"]["promoted"]]
    assert [r["iteration"] for r in checkpoints] == promoted
    for r in checkpoints:
        it = r["iteration"]
        lock = yaml.safe_load(git(micro_workspace, "show", f"iter-{it}:dvc.lock"))["stages"]
        assert r["md5"] == lock[f"train@{it}"]["outs"][0]["md5"] and r["checkpoint"] == f"models/{it}"
        assert r["code_commit"] == records[it]["code"]["commit"]
    # 3: every scored sample is counted once, per iteration and difficulty
    assert per_difficulty
    con = connect(micro_workspace)
    assert sum(r["samples"] for r in per_difficulty) == con.sql("SELECT count(*) FROM scored").fetchone()[0]
    assert sum(r["selected"] for r in per_difficulty) == con.sql("SELECT count(*) FROM selected").fetchone()[0]


def test_artifacts_view_holds_every_out_at_every_tag(micro_workspace):
    con = connect(micro_workspace)
    for it in ("0000", "0001", "0002"):
        lock = yaml.safe_load(git(micro_workspace, "show", f"iter-{it}:dvc.lock"))["stages"]
        expected = sorted((name, o["path"], o["md5"], o["size"]) for name, s in lock.items() for o in s["outs"])
        got = con.execute("SELECT stage, path, md5, size FROM artifacts WHERE tag = ? ORDER BY ALL",
                          [f"iter-{it}"]).fetchall()
        assert got == expected


def test_metrics_view_flattens_eval_and_pool_metrics(micro_workspace):
    con = connect(micro_workspace)
    for it in ("0001", "0002"):
        ev = json.loads(git(micro_workspace, "show", f"iter-{it}:data/iterations/{it}/eval.json"))
        m = json.loads(git(micro_workspace, "show", f"iter-{it}:data/iterations/{it}/metrics.json"))
        row = con.execute("SELECT test_pass_at_1, pool_coverage, pool_n_samples FROM metrics WHERE iteration = ?",
                          [it]).fetchone()
        assert row == pytest.approx((ev["pass@1"], m["coverage"], m["n_samples"]))


def test_held_and_gate_failed_iterations(tmp_path):
    ws = synthesize(tmp_path / "ws", iterations=9, n_prompts=8, k=2)
    con = connect(ws)
    held = con.sql("SELECT iteration, gate_passed FROM iterations WHERE NOT promoted ORDER BY 1").fetchall()
    records = {p.stem: json.loads(p.read_text()) for p in (ws / "records").glob("0*.json")}
    assert [it for it, _ in held] == sorted(it for it, r in records.items()
                                            if r["promotion"] and not r["promotion"]["promoted"])
    assert ("0009", False) in held  # the gate failure is held, with its reason
    assert con.sql("SELECT count(*) FROM artifacts WHERE stage = 'train@0009'").fetchone()[0] == 0
    err = flywheel("sql", "SELECT * FROM nope", "-w", str(ws), check=False)
    assert err.returncode != 0 and "nope" in err.stderr


def test_samples_and_scored_have_an_origin_in_every_iteration(tmp_path):
    from tests.support.hinted_tables import HINTS, add_hinted_rows

    ws = synthesize(tmp_path / "ws", iterations=2, n_prompts=4, k=2)
    query = ("SELECT iteration, origin, hint_kind, hint, count(*) FROM {} "
             "GROUP BY ALL ORDER BY iteration, origin")
    for view in ("samples", "scored"):  # hints off: no file has the columns, every row is the model's own
        assert connect(ws).sql(query.format(view)).fetchall() == [("0001", "self", None, None, 8),
                                                                  ("0002", "self", None, None, 8)]
    add_hinted_rows(ws, "0002")  # iteration 2 ran the hint pass; iteration 1's files still lack the columns
    expected = [("0001", "self", None, None, 8), *sorted(
        [("0002", o, k, h, 4) for o, k, h in HINTS.values()] + [("0002", "self", None, None, 8)])]
    for view in ("samples", "scored"):
        assert connect(ws).sql(query.format(view)).fetchall() == expected
    hinted = json.loads(flywheel("sql", "SELECT DISTINCT sample_idx, origin FROM scored WHERE origin <> 'self' "
                                 "ORDER BY 1", "-w", str(ws), "--json").stdout)
    assert hinted == [{"sample_idx": i, "origin": o} for i, (o, _, _) in HINTS.items()]
