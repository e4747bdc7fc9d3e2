"""`flywheel diff`: rows by key, per-prompt correct counts, metric and config deltas."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from bench.lineage_speed import synthesize
from tasks.audit.diff import diff, diff_iterations, diff_tables
from tasks.audit.lock_history import flatten
from tests.conftest import flywheel, git


def scored_table(rows: list[tuple[str, int, bool, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "correct": pl.Boolean,
                                      "text": pl.String}, orient="row")


@pytest.fixture
def two_tables(tmp_path):
    a = scored_table([("p1", 0, True, "x"), ("p1", 1, False, "y"), ("p2", 0, True, "z"), ("p3", 0, True, "w"),
                      ("p5", 0, False, "v"), ("p5", 1, False, "u")])
    b = scored_table([("p1", 0, True, "x"), ("p1", 1, True, "Y"), ("p2", 0, False, "z"), ("p4", 0, True, "q"),
                      ("p4", 1, False, "r"), ("p5", 0, False, "v"), ("p5", 1, False, "u")])
    a.write_parquet(tmp_path / "a.parquet")
    b.write_parquet(tmp_path / "b.parquet")
    return tmp_path / "a.parquet", tmp_path / "b.parquet"


def test_rows_added_removed_and_changed_by_key(two_tables):
    d = diff_tables(*two_tables)
    assert d["key"] == ["prompt_id", "sample_idx"]
    assert d["rows"] == {"a": 6, "b": 7}
    assert d["keys"] == {"added": 2, "removed": 1, "common": 5}
    assert d["added_examples"] == [{"prompt_id": "p4", "sample_idx": 0}, {"prompt_id": "p4", "sample_idx": 1}]
    assert d["removed_examples"] == [{"prompt_id": "p3", "sample_idx": 0}]
    # on the 5 common keys: (p1,1) flipped to correct with new text, (p2,0) flipped to incorrect
    assert d["changed_columns"] == {"correct": 2, "text": 1}


def test_per_prompt_correct_counts(two_tables):
    c = diff_tables(*two_tables)["correct"]
    assert (c["improved"], c["worsened"], c["unchanged"]) == (1, 1, 1)  # p1 1->2, p2 1->0, p5 0->0
    assert (c["only_in_a"], c["only_in_b"]) == (1, 1)  # p3, p4
    assert (c["total_correct_a"], c["total_correct_b"]) == (3, 3)
    assert (c["prompts_solved_a"], c["prompts_solved_b"]) == (3, 2)  # p1, p2, p3 / p1, p4
    moves = {m["prompt_id"]: (m["correct_a"], m["correct_b"], m["delta"]) for m in c["largest_changes"]}
    assert moves == {"p1": (1, 2, 1), "p2": (1, 0, -1)}


def test_prompts_table_is_keyed_by_prompt_id(tmp_path):
    pl.DataFrame({"prompt_id": ["a", "b"], "split": ["train", "test"]}).write_parquet(tmp_path / "x.parquet")
    pl.DataFrame({"prompt_id": ["b", "c"], "split": ["train", "test"]}).write_parquet(tmp_path / "y.parquet")
    d = diff_tables(tmp_path / "x.parquet", tmp_path / "y.parquet")
    assert d["key"] == ["prompt_id"] and d["keys"] == {"added": 1, "removed": 1, "common": 1}
    assert d["changed_columns"] == {"split": 1} and "correct" not in d


def test_cli_diff_of_two_table_paths(two_tables):
    out = json.loads(flywheel("diff", str(two_tables[0]), str(two_tables[1]), "--json").stdout)
    assert out["table"]["keys"] == {"added": 2, "removed": 1, "common": 5}
    text = flywheel("diff", str(two_tables[0]), str(two_tables[1])).stdout
    assert "+2 added, -1 removed, 5 common" in text and "1 improved, 1 worsened" in text


def test_iteration_diff_of_micro_workspace(micro_workspace):
    d = json.loads(flywheel("diff", "1", "2", "-w", str(micro_workspace), "--json").stdout)
    ws = micro_workspace

    def at(it: str, path: str) -> str:
        return git(ws, "show", f"iter-{it}:{path}")

    # param deltas: params.yaml at each tag, flattened to dotted keys
    pa = flatten(yaml.safe_load(at("0001", "data/iterations/0001/params.yaml")))
    pb = flatten(yaml.safe_load(at("0002", "data/iterations/0002/params.yaml")))
    assert d["params"]["changed"] == {k: {"a": pa[k], "b": pb[k]} for k in pa.keys() & pb.keys() if pa[k] != pb[k]}
    # iteration variables: round 1 -> 2 always; parent moves to 0001 when iteration 1 was promoted
    va = yaml.safe_load(at("0001", "iterations.yaml"))["iterations"]["0001"]
    vb = yaml.safe_load(at("0002", "iterations.yaml"))["iterations"]["0002"]
    assert d["iteration_vars"]["changed"]["round"] == {"a": 1, "b": 2}
    assert ("parent" in d["iteration_vars"]["changed"]) == (va["parent"] != vb["parent"])
    # metric deltas: exactly the keys that differ, with b - a
    for name, key in (("metrics.json", "metrics"), ("eval.json", "eval")):
        ma = flatten(json.loads(at("0001", f"data/iterations/0001/{name}")))
        mb = flatten(json.loads(at("0002", f"data/iterations/0002/{name}")))
        differing = {k for k in ma.keys() | mb.keys() if ma.get(k) != mb.get(k)}
        assert set(d[key]) == differing
        for k in differing:
            assert d[key][k]["delta"] == pytest.approx(mb[k] - ma[k])
    assert d["metrics"], "two iterations on different prompts should differ in some pool metric"
    # the scored tables: key sets compared independently with pyarrow
    keys = [set(zip(*pq.read_table(ws / f"data/iterations/{it}/scored.parquet",
                                   columns=["prompt_id", "sample_idx"]).to_pydict().values(), strict=True))
            for it in ("0001", "0002")]
    assert d["table"]["keys"] == {"added": len(keys[1] - keys[0]), "removed": len(keys[0] - keys[1]),
                                  "common": len(keys[0] & keys[1])}


def test_config_change_shows_as_param_delta(tmp_path):
    ws = synthesize(tmp_path / "ws", iterations=6, n_prompts=8, k=2)  # select.cap_per_prompt 4 -> 2 after 3
    d = diff_iterations(ws, "2", "5", table="selected")
    assert d["params"]["changed"] == {"select.cap_per_prompt": {"a": 4, "b": 2}}
    caps = [pl.read_parquet(ws / f"data/iterations/{it}/selected.parquet").group_by("prompt_id").len()["len"].max()
            for it in ("0002", "0005")]
    assert caps[0] <= 4 and caps[1] <= 2
    assert d["table"]["rows"] == {"a": pq.read_metadata(ws / "data/iterations/0002/selected.parquet").num_rows,
                                  "b": pq.read_metadata(ws / "data/iterations/0005/selected.parquet").num_rows}
    with pytest.raises(Exception, match="iteration '7' not found"):
        diff(ws, "1", "7")


def test_pairs_tables_are_keyed_by_prompt_and_both_sample_indices(tmp_path):
    def pairs(rows):
        return pl.DataFrame(rows, schema={"prompt_id": pl.String, "prompt": pl.String, "chosen": pl.String,
                                          "rejected": pl.String, "chosen_idx": pl.Int32, "rejected_idx": pl.Int32,
                                          "margin": pl.Float64}, orient="row")

    pairs([("p1", "q", "a", "b", 0, 1, 1.0), ("p1", "q", "a", "c", 0, 2, 1.0)]).write_parquet(tmp_path / "a.parquet")
    pairs([("p1", "q", "a", "B", 0, 1, 0.5), ("p2", "q", "d", "e", 3, 4, 1.0)]).write_parquet(tmp_path / "b.parquet")
    for table in (None, "pairs"):
        d = diff_tables(tmp_path / "a.parquet", tmp_path / "b.parquet", table)
        assert d["key"] == ["prompt_id", "chosen_idx", "rejected_idx"]
        assert d["keys"] == {"added": 1, "removed": 1, "common": 1}
        assert d["changed_columns"] == {"rejected": 1, "margin": 1}
        assert d["removed_examples"] == [{"prompt_id": "p1", "chosen_idx": 0, "rejected_idx": 2}]
