"""Label-free preference iterations end to end: majority-vote pseudo-labels, vote pairs from select and
DPO training, run by `flywheel run`, shown by lineage and diff, and reproduced bit for bit."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.conftest import MICRO_RECIPE, dvc, flywheel

pytestmark = pytest.mark.slow  # about five minutes on two busy cores: two iterations, then a reproduce

RECIPE = {**MICRO_RECIPE,
          "verifier": {"type": "majority_vote", "vote": {"min_agreement": 0.5}},
          "select": {"mode": "pairs", "pairs": {"strategy": "vote"}},
          # the DPO preset's loss: DPO plus the NLL term on the chosen answer
          "train": {**MICRO_RECIPE["train"], "objective": "dpo", "dpo": {"sft_weight": 1.0}},
          # long enough a warm-up that samples end in "Answer: n", so votes and pairs exist
          "warmup": {"max_steps": 150, "batch_size": 16, "learning_rate": 3e-3},
          "generate": {**MICRO_RECIPE["generate"], "k": 4}}


@pytest.fixture(scope="module")
def dpo_workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("dpo")
    (base / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    ws = base / "ws"
    flywheel("run", "-w", str(ws), "-c", str(base / "r.yaml"), "-n", "2")
    return ws


def test_pairs_dpo_iterations_are_recorded_shown_and_reproduced(dpo_workspace, tmp_path):
    import polars as pl

    from tasks.data.schema import PAIRS

    ws = dpo_workspace
    for it in ("0001", "0002"):
        pairs = pl.read_parquet(ws / f"data/iterations/{it}/selected.parquet")
        assert pairs.schema == PAIRS.schema and pairs.height > 0
        metrics = json.loads((ws / f"data/iterations/{it}/metrics.json").read_text())
        assert {"pseudo_label_coverage", "pseudo_label_agreement", "pseudo_label_accuracy"} <= set(metrics)
        gate = json.loads((ws / f"data/iterations/{it}/gate.json").read_text())
        assert gate["passed"] and {"pairs.schema", "pairs.rows", "pairs.aggregate"} <= set(gate["suites"])

    lineage = json.loads(flywheel("lineage", "2", "-w", str(ws), "--json").stdout)
    assert lineage["chain"]["pairs"] == "data/iterations/0002/selected.parquet" and "selected" not in lineage["chain"]
    assert lineage["chain"]["reference_model"] == lineage["chain"]["parent_model"] == "models/0001"
    assert "DPO reference" in flywheel("lineage", "2", "-w", str(ws)).stdout

    d = json.loads(flywheel("diff", "1", "2", "-w", str(ws), "--table", "pairs", "--json").stdout)
    assert d["table"]["key"] == ["prompt_id", "chosen_idx", "rejected_idx"]

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
    dvc(clone, "pull", "-q")
    report = json.loads(flywheel("reproduce", "2", "-w", str(clone), "--json", check=False).stdout)
    assert report["ok"] and report["problems"] == [], report["problems"]
    statuses = {a["path"]: a["status"] for a in report["artifacts"]}
    assert statuses["models/0002"] == statuses["data/iterations/0002/selected.parquet"] == "match"
    assert set(statuses.values()) == {"match"}


def test_a_pair_training_example_names_both_samples_and_the_reference(dpo_workspace):
    import polars as pl

    ws = dpo_workspace
    pairs = {it: pl.read_parquet(ws / f"data/iterations/{it}/selected.parquet") for it in ("0001", "0002")}
    pair = pairs["0002"].sort("prompt_id", "chosen_idx", "rejected_idx").row(0, named=True)
    pid, chosen, rejected = pair["prompt_id"], pair["chosen_idx"], pair["rejected_idx"]
    out = json.loads(flywheel("lineage", "--example", f"{pid}:{chosen}", "-w", str(ws), "--json").stdout)
    # every iteration that trained on the sample, as either side of a pair, and only those
    holding = {it: t.filter((pl.col("prompt_id") == pid) & ((pl.col("chosen_idx") == chosen)
                                                           | (pl.col("rejected_idx") == chosen)))
               for it, t in pairs.items()}
    assert [f["iteration"] for f in out["found_in"]] == [it for it, t in holding.items() if t.height]
    lock = yaml.safe_load(subprocess.run(["git", "show", "iter-0002:dvc.lock"], cwd=ws, capture_output=True,
                                         text=True, check=True).stdout)["stages"]
    ref_md5 = next(d["md5"] for d in lock["train@0002"]["deps"] if d["path"] == "models/0001")
    scored = pl.read_parquet(ws / "data/iterations/0002/scored.parquet").filter(pl.col("prompt_id") == pid)
    found = next(f for f in out["found_in"] if f["iteration"] == "0002")
    assert found["table"] == "pairs" and found["rows"] == holding["0002"].height
    assert found["reference_model"] == {"path": "models/0001", "md5": ref_md5}
    got = next(p for p in found["pairs"] if (p["chosen_idx"], p["rejected_idx"]) == (chosen, rejected))
    assert got["margin"] == pytest.approx(pair["margin"])
    for side, idx in (("chosen", chosen), ("rejected", rejected)):
        row = scored.filter(pl.col("sample_idx") == idx).row(0, named=True)
        assert {k: got[side][k] for k in ("score", "correct", "seed", "model_hash")} == \
            {k: row[k] for k in ("score", "correct", "seed", "model_hash")}, side
    lin = out["lineages"][out["found_in"].index(found)]
    assert lin["chain"]["pairs"] == "data/iterations/0002/selected.parquet"

    exact = json.loads(flywheel("lineage", "--example", f"{pid}:{chosen}:{rejected}", "-w", str(ws),
                                "--json").stdout)
    assert [(f["iteration"], [(p["chosen_idx"], p["rejected_idx"]) for p in f["pairs"]])
            for f in exact["found_in"]] == [(it, [(chosen, rejected)]) for it, t in pairs.items()
                                            if t.filter((pl.col("prompt_id") == pid) & (pl.col("chosen_idx") == chosen)
                                                        & (pl.col("rejected_idx") == rejected)).height]
    tree = flywheel("lineage", "--example", f"{pid}:{chosen}:{rejected}", "-w", str(ws)).stdout
    assert f"pair chosen {chosen} / rejected {rejected}" in tree
    assert f"DPO reference models/0001 ({ref_md5[:8]})" in tree

    for bad, needle in (([f"{pid}:1:2:3"], "--example"), ([f"{pid}:{chosen}:{rejected}", "--example-table",
                                                         "scored"], "--example-table")):
        proc = flywheel("lineage", "--example", *bad, "-w", str(ws), check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
