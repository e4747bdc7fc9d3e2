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
          "train": {**MICRO_RECIPE["train"], "objective": "dpo"},
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
