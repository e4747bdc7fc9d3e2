"""Lineage is read from DVC's own records: every hash checked here comes from `git show
iter-NNNN:dvc.lock` in the test itself, never from a constant."""

from __future__ import annotations

import json

import duckdb
import pyarrow.parquet as pq
import pydot
import pytest
import yaml

from bench.lineage_speed import synthesize
from tasks.audit.lineage import SEED_KEYS, example_lineage, find_artifact, iteration_lineage
from tasks.audit.lock_history import flatten
from tasks.seeds import derive_seed
from tests.conftest import flywheel, git


def lock_at(ws, it: str) -> dict:
    return yaml.safe_load(git(ws, "show", f"iter-{it}:dvc.lock"))["stages"]


def outs_of(stage: dict) -> dict[str, dict]:
    return {o["path"]: o for o in stage.get("outs", [])}


@pytest.fixture(scope="module")
def synth_ws(tmp_path_factory):
    """A 10-iteration synthetic workspace (no training): iteration 9 fails the gate, 4 and 8 are held."""
    return synthesize(tmp_path_factory.mktemp("synth") / "ws", iterations=10, n_prompts=16, k=4)


@pytest.mark.parametrize("it", ["0001", "0002"])
def test_lineage_json_matches_dvc_lock_at_the_tag(micro_workspace, it):
    lin = json.loads(flywheel("lineage", str(int(it)), "-w", str(micro_workspace), "--json").stdout)
    lock = lock_at(micro_workspace, it)
    record = json.loads(git(micro_workspace, "show", f"iter-{it}:records/{it}.json"))
    assert lin["iteration"] == it and lin["commit"] == git(micro_workspace, "rev-parse", f"iter-{it}^{{commit}}")
    producers = {o["path"]: name for name, s in lock.items() for o in s.get("outs", [])}
    for role in ("samples", "scored", "selected", "checkpoint", "evaluation", "calibration", "prompts"):
        path = lin["chain"][role]
        recorded = outs_of(lock[producers[path]])[path]
        art = lin["artifacts"][path]
        assert (art["md5"], art["size"], art["nfiles"], art["stage"]) == (
            recorded["md5"], recorded["size"], recorded.get("nfiles"), producers[path]), role
    # the parent model is identified by the generate stage's recorded dep, and its md5 is that dep's
    model_deps = [d for d in lock[f"generate@{it}"]["deps"] if d["path"].startswith("models/0")]
    assert lin["chain"]["parent_model"] == model_deps[0]["path"] == f"models/{record['parent']}"
    assert lin["artifacts"][model_deps[0]["path"]]["md5"] == model_deps[0]["md5"]
    # params are the lock's params section, seeds are derived as the stages derive them
    for name in (f"generate@{it}", f"train@{it}", f"select@{it}"):
        stage = lin["stages"][name]
        expected = {}
        for values in lock[name]["params"].values():
            expected.update(flatten(values))
        assert stage["params"] == expected
        base = name.split("@")[0]
        assert stage["seed"] == (derive_seed(expected["run.seed"], it, SEED_KEYS[base]) if base in SEED_KEYS else None)
    assert lin["run"]["code"] == record["code"] and lin["run"]["packages"] == record["packages"]
    assert lin["choice"] == json.loads(git(micro_workspace, "show", f"iter-{it}:data/iterations/{it}/choice.json"))
    assert lin["promotion"]["promoted"] == record["promotion"]["promoted"]
    assert lin["gate"]["passed"] == record["gate"]["passed"]
    # row counts come from Parquet footers (the files at HEAD are the tag's versions here)
    samples = lin["chain"]["samples"]
    assert lin["artifacts"][samples]["rows"] == pq.read_metadata(micro_workspace / samples).num_rows > 0
    splits = lin["artifacts"]["data/prompts/prompts.parquet"]["splits"]
    assert sum(splits.values()) == pq.read_metadata(micro_workspace / "data/prompts/prompts.parquet").num_rows


def test_walk_back_from_checkpoint_md5(micro_workspace):
    lock = lock_at(micro_workspace, "0002")
    md5 = outs_of(lock["train@0002"])["models/0002"]["md5"]
    lin = find_artifact(micro_workspace, md5[:8])
    target = lin["target"]
    assert (target["path"], target["md5"], target["stage"], target["iteration"]) == (
        "models/0002", md5, "train@0002", "0002")
    # the full upstream chain, back to the bootstrap stages, with the lock's hashes at every step
    for stage in ("select@0002", "score@0002", "generate@0002", "calibrate@0002", "train@0001", "warmup", "base",
                  "prepare"):
        assert stage in target["upstream"]
    for path, art in lin["artifacts"].items():
        producer = next((s for s in lock.values() if path in outs_of(s)), None)
        if producer is not None:
            assert art["md5"] == outs_of(producer)[path]["md5"], path
    # the same artifact by path, and through the CLI
    assert find_artifact(micro_workspace, "models/0002")["target"]["md5"] == md5
    cli = json.loads(flywheel("lineage", md5[:10], "-w", str(micro_workspace), "--json").stdout)
    assert cli["target"]["stage"] == "train@0002"


def test_walk_back_from_a_training_example(micro_workspace):
    lock = lock_at(micro_workspace, "0002")
    selected = micro_workspace / "data/iterations/0002/selected.parquet"
    row = duckdb.execute("SELECT prompt_id, sample_idx FROM read_parquet(?) ORDER BY ALL LIMIT 1",
                         [str(selected)]).fetchone()
    table = "selected"
    if row is None:  # the micro model selected nothing: walk back from a scored sample instead
        table = "scored"
        row = duckdb.execute("SELECT prompt_id, sample_idx FROM read_parquet(?) ORDER BY ALL LIMIT 1",
                             [str(micro_workspace / "data/iterations/0002/scored.parquet")]).fetchone()
    result = example_lineage(micro_workspace, row[0], row[1], table=table)
    found = [f["iteration"] for f in result["found_in"]]
    assert "0002" in found
    # every iteration reported really holds the row, and every one that holds it is reported
    for it in ("0001", "0002"):
        path = micro_workspace / f"data/iterations/{it}/{table}.parquet"
        n = duckdb.execute("SELECT count(*) FROM read_parquet(?) WHERE prompt_id = ? AND sample_idx = ?",
                           [str(path), row[0], row[1]]).fetchone()[0]
        assert (it in found) == (n > 0)
    lin = result["lineages"][found.index("0002")]
    path = f"data/iterations/0002/{table}.parquet"
    producer = {"selected": "select", "scored": "score"}[table]
    assert lin["artifacts"][path]["md5"] == outs_of(lock[f"{producer}@0002"])[path]["md5"]
    sample = result["found_in"][found.index("0002")]["sample"]
    seed = duckdb.execute("SELECT seed FROM read_parquet(?) WHERE prompt_id = ? AND sample_idx = ?",
                          [str(micro_workspace / "data/iterations/0002/scored.parquet"), row[0], row[1]]).fetchone()
    assert sample["seed"] == seed[0]


def test_example_in_selected_tables(synth_ws):
    row = duckdb.execute("SELECT prompt_id, sample_idx FROM read_parquet(?) ORDER BY ALL LIMIT 1",
                         [str(synth_ws / "data/iterations/0003/selected.parquet")]).fetchone()
    out = json.loads(flywheel("lineage", "--example", f"{row[0]}:{row[1]}", "-w", str(synth_ws), "--json").stdout)
    found = {f["iteration"] for f in out["found_in"]}
    holding = set()
    for path in sorted((synth_ws / "data/iterations").glob("*/selected.parquet")):
        table = pq.read_table(path)
        if table.filter(_mask(table, row)).num_rows:
            holding.add(path.parent.name)
    assert found == holding and "0003" in found
    assert all(lin["chain"]["selected"] == f"data/iterations/{lin['iteration']}/selected.parquet"
               for lin in out["lineages"])


def _mask(table, row):
    import pyarrow.compute as pc

    return pc.and_(pc.equal(table["prompt_id"], row[0]), pc.equal(table["sample_idx"], row[1]))


def test_gate_failed_iteration_has_no_checkpoint_and_keeps_parent(synth_ws):
    lin = iteration_lineage(synth_ws, 9)
    assert "checkpoint" not in lin["chain"] and "train@0009" not in lin["stages"]
    assert lin["gate"]["passed"] is False and lin["promotion"]["promoted"] is False
    lock = lock_at(synth_ws, "0009")
    parent = next(d["path"] for d in lock["generate@0009"]["deps"] if d["path"].startswith("models/"))
    assert lin["chain"]["parent_model"] == parent
    assert lin["ancestry"][0]["model"] == parent and lin["ancestry"][-1]["model"] == "models/base"


def test_dot_and_mermaid_show_the_chain(micro_workspace):
    lock = lock_at(micro_workspace, "0002")
    samples_md5 = outs_of(lock["generate@0002"])["data/iterations/0002/samples.parquet"]["md5"]
    dot = flywheel("lineage", "2", "-w", str(micro_workspace), "--dot").stdout
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    assert '"a:models/0001" -> "s:generate@0002";' in dot
    assert '"s:generate@0002" -> "a:data/iterations/0002/samples.parquet";' in dot
    assert samples_md5[:8] in dot
    graph = pydot.graph_from_dot_data(dot)[0]  # valid DOT, one node per artifact and stage of the lineage
    lin = iteration_lineage(micro_workspace, 2)
    names = {n.get_name().strip('"') for n in graph.get_nodes()} - {"node"}
    assert names == {f"a:{p}" for p in lin["artifacts"]} | {f"s:{n}" for n in lin["stages"]}
    mermaid = flywheel("lineage", "2", "-w", str(micro_workspace), "--mermaid").stdout
    assert mermaid.startswith("flowchart LR")
    assert "generate@0002" in mermaid and "models/0002" in mermaid and samples_md5[:8] in mermaid
    assert mermaid.count("-->") == dot.count("->")


def test_tree_and_log_for_people(micro_workspace):
    tree = flywheel("lineage", "2", "-w", str(micro_workspace)).stdout
    assert "iteration 0002" in tree and "generate@0002" in tree and "ancestry" in tree
    log = flywheel("log", "-w", str(micro_workspace)).stdout.splitlines()
    assert [line.split()[0] for line in log] == ["0000", "0001", "0002"]
    rows = json.loads(flywheel("log", "-w", str(micro_workspace), "--json").stdout)
    for r in rows[1:]:
        it = r["iteration"]
        choice = json.loads(git(micro_workspace, "show", f"iter-{it}:data/iterations/{it}/choice.json"))
        promo = json.loads(git(micro_workspace, "show", f"iter-{it}:data/iterations/{it}/promotion.json"))
        ev = json.loads(git(micro_workspace, "show", f"iter-{it}:data/iterations/{it}/eval.json"))
        assert (r["temperature"], r["threshold"]) == (choice["temperature"], choice["threshold"])
        assert r["promoted"] == promo["promoted"] and r["pass@1"] == ev["pass@1"]
        assert ("promoted" if promo["promoted"] else "held") in log[int(it)]


@pytest.mark.parametrize("query", ["9", "models/0099", "abcdef0123"])
def test_unknown_query_is_one_line_naming_it(micro_workspace, query):
    proc = flywheel("lineage", query, "-w", str(micro_workspace), check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "not found" in err
    assert ("flywheel log" in err) if query == "9" else ("flywheel sql" in err)


def test_bstar_block_states_the_reference_options(synth_ws):
    from tasks.audit.lineage_render import bstar_line

    b = iteration_lineage(synth_ws, 1)["bstar"]
    assert b == {"average_over": "all", "threshold_from": "probe", "inject_reference": "none", "reference_score": 1.0,
                 "predates": [], "calibrated": True, "temperature": 0.8, "probe_threshold": 0.5, "threshold": 0.5,
                 "threshold_source": "probe", "fidelity": "legacy", "balance_score": None, "runners_up": []}
    assert bstar_line(b) == ("B-STaR: T 0.8 from the probe; threshold 0.5 from the probe; balance over all prompts; "
                             "reference not injected")
    out = flywheel("lineage", "1", "-w", str(synth_ws)).stdout
    assert "B-STaR: T 0.8 from the probe; threshold 0.5 from the probe" in out


def test_bstar_block_of_options_and_of_an_older_lock():
    from tasks.audit.lineage import _bstar
    from tasks.audit.lineage_render import bstar_line
    from tasks.audit.lock_history import parse_lock

    lock = parse_lock(yaml.safe_dump({"schema": "2.0", "stages": {"calibrate@0003": {
        "cmd": "flywheel stage calibrate --iteration 0003",
        "params": {"data/iterations/0003/params.yaml": {"calibrate": {
            "enabled": True, "average_over": "selected", "threshold_from": "full", "inject_reference": "balance",
            "reference_score": 1.0, "n_star": 8}}}}}}))
    choice = {"temperature": 0.8, "threshold": 0.6, "calibrated": True}
    b = _bstar(lock["calibrate@0003"], choice, {"threshold": 0.79, "from": "full", "probe_threshold": 0.6})
    assert (b["average_over"], b["threshold_from"], b["inject_reference"], b["predates"]) == (
        "selected", "full", "balance", [])
    assert (b["threshold"], b["probe_threshold"], b["threshold_source"]) == (0.79, 0.6, "full")
    assert bstar_line(b) == ("B-STaR: T 0.8 from the probe; threshold 0.79 re-swept on the full set (probe 0.6); "
                             "balance over prompts with a selection; reference injected at 1 into the balance")
    # a lock written before the options: their defaults, marked as such; no threshold.json: the probe's
    old = parse_lock(yaml.safe_dump({"schema": "2.0", "stages": {"calibrate@0001": {
        "cmd": "flywheel stage calibrate --iteration 0001",
        "params": {"data/iterations/0001/params.yaml": {"calibrate": {"enabled": True, "n_star": 8}}}}}}))
    b = _bstar(old["calibrate@0001"], choice, None)
    assert b["predates"] == ["average_over", "threshold_from", "inject_reference", "reference_score"]
    assert (b["average_over"], b["threshold_from"], b["inject_reference"], b["threshold"]) == (
        "all", "probe", "none", 0.6)
    assert bstar_line(b).endswith("reference not injected (defaults: the iteration predates these options)")
    off = _bstar(None, {"temperature": 1.0, "threshold": 0.0, "calibrated": False}, None)
    assert bstar_line(off) == "B-STaR: off; fixed T 1, threshold 0"


def test_example_shows_the_samples_origin_and_hint(tmp_path):
    from tests.support.hinted_tables import HINTS, add_hinted_rows

    ws = synthesize(tmp_path / "ws", iterations=2, n_prompts=4, k=2)
    add_hinted_rows(ws, "0002")  # iteration 2 ran the hint pass; iteration 1 did not
    prompt = duckdb.execute("SELECT min(prompt_id) FROM read_parquet(?)",
                            [str(ws / "data/iterations/0002/scored.parquet")]).fetchone()[0]
    for idx, (origin, kind, hint) in HINTS.items():
        out = json.loads(flywheel("lineage", "--example", f"{prompt}:{idx}", "--example-table", "scored",
                                  "-w", str(ws), "--json").stdout)
        [found] = out["found_in"]
        assert found["iteration"] == "0002"
        assert {k: found["sample"][k] for k in ("origin", "hint_kind", "hint")} == {
            "origin": origin, "hint_kind": kind, "hint": hint}
        tree = flywheel("lineage", "--example", f"{prompt}:{idx}", "--example-table", "scored", "-w", str(ws)).stdout
        assert f"origin {origin}" in tree and f"hint ({kind}): {json.dumps(hint)}" in tree
    # a first-pass sample, in the hinted iteration (origin self, no hint) and in one without the columns
    plain = duckdb.execute("SELECT prompt_id, sample_idx FROM read_parquet(?) ORDER BY ALL LIMIT 1",
                           [str(ws / "data/iterations/0001/scored.parquet")]).fetchone()
    for p, i in (plain, (prompt, 0)):
        out = json.loads(flywheel("lineage", "--example", f"{p}:{i}", "--example-table", "scored",
                                  "-w", str(ws), "--json").stdout)
        assert out["found_in"]
        for found in out["found_in"]:
            assert {k: found["sample"][k] for k in ("origin", "hint_kind", "hint")} == {
                "origin": "self", "hint_kind": None, "hint": None}
        tree = flywheel("lineage", "--example", f"{p}:{i}", "--example-table", "scored", "-w", str(ws)).stdout
        assert "origin self" in tree and "hint (" not in tree
