"""bench/bstar_fidelity.py maps a workspace's tables to the reference code's records faithfully: on a
workspace made from synthesized samples, the port's choice and the reference rules' choice agree, and
both agree with the port run on the synthesizer's own reference-format records."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from bench.bstar_fidelity import iteration
from bench.bstar_reference_port import NO_CAP, determine_hyper
from tests.unit.metrics.test_bstar_reference_port import synthesize


def _workspace(tmp_path, seed: int):
    s = synthesize(seed, n_temps=2)
    ws = tmp_path / f"ws{seed}"
    it = ws / "data" / "iterations" / "0001"
    it.mkdir(parents=True)
    (ws / "data" / "prompts").mkdir(parents=True)
    (ws / "flywheel.yaml").write_text(yaml.safe_dump({"calibrate": {"k": s.k}, "generate": {"k": s.k}}))
    s.prompts.write_parquet(ws / "data" / "prompts" / "prompts.parquet")
    s.scored.write_parquet(it / "probe.parquet")
    pool_t = s.temperatures[0]
    s.scored.filter(pl.col("temperature") == pool_t).drop("temperature").write_parquet(it / "scored.parquet")
    pl.DataFrame({"prompt_id": ["x"]}).write_parquet(it / "selected.parquet")
    (it / "choice.json").write_text(json.dumps({"temperature": pool_t, "threshold": 0.79}))
    return s, ws


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_the_bench_compares_like_with_like(tmp_path, seed):
    s, ws = _workspace(tmp_path, seed)
    row = iteration(ws, "0001", pl.read_parquet(ws / "data" / "prompts" / "prompts.parquet"))
    ref, mode = row["reference_code"], row["reference_mode"]
    # the port on the bench's records chooses what it chooses on the synthesizer's own records
    direct = determine_hyper(s.per_temperature, NO_CAP, exact=False)
    assert (ref["temperature"], ref["probe_threshold"]) == (direct.temperature, direct.threshold)
    # and the reference rules choose the same, on the probe and on the pool, with the same rows
    assert (mode["temperature"], mode["probe_threshold"], mode["full_threshold"]) == \
        (ref["temperature"], ref["probe_threshold"], ref["full_threshold"])
    assert mode["rows_uncapped"] == ref["rows"]
    assert row["max_grid_gap"]["probe"] < 1e-12 and row["max_grid_gap"]["full"] < 1e-12
