"""Every recipe in configs/ loads with the project's recipe loader, and the real-task presets'
column mappings work on the shipped fixtures of the same dataset formats (offline)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tasks.config.loading import load_recipe
from tasks.config.recipe import HubSource, PretrainedInit
from tasks.data.math_sources import load_hub_prompts

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))
FIXTURES = ROOT / "tests" / "fixtures"


def test_presets_exist():
    names = {p.name for p in PRESETS}
    assert {"tiny-arith.yaml", "gsm8k-qwen.yaml", "math-qwen.yaml"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads(path):
    recipe = load_recipe(path)
    assert recipe.run.name == path.stem


@pytest.mark.parametrize("name, fixture, dataset", [("gsm8k-qwen", "gsm8k", "openai/gsm8k"),
                                                     ("math-qwen", "math", "DigitalLearningGmbH/MATH-lighteval")])
def test_math_preset_mapping_reads_its_fixture(name, fixture, dataset, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    recipe = load_recipe(ROOT / "configs" / f"{name}.yaml")
    src = recipe.prompts.source
    assert isinstance(src, HubSource) and src.dataset == dataset
    assert recipe.verifier.type == "math_verify" and recipe.generate.backend == "vllm"
    assert isinstance(recipe.model.init, PretrainedInit) and recipe.model.init.name_or_path.startswith("Qwen/Qwen2.5-")
    # the preset's own column mapping and answer format, on a dataset of the same shape
    local = src.model_copy(update={"dataset": str(FIXTURES / fixture), "config": None,
                                   "splits": {"seed": "train[:5]", "probe": "train[5:7]", "train": "train[7:]",
                                              "test": "test"}})
    df = load_hub_prompts(local)
    assert set(df["split"]) == {"seed", "probe", "train", "test"}
    assert df["answer"].null_count() == 0
    seed_targets = df.filter(pl.col("split") == "seed")["target"]
    assert seed_targets.null_count() == 0 and seed_targets.str.contains("\\boxed{", literal=True).all()
