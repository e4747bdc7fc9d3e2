"""End to end on the GSM8K fixture: `flywheel run` for one iteration with a Hub-style source (a
local folder read through `datasets`), the tiny Llama and the math_verify verifier; then the
workspace's own samples are re-scored with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tasks.config.recipe import RewardConfig, VerifierConfig
from tasks.data.schema import PROMPTS, SAMPLES, read_table, write_table
from tasks.stages.score import score
from tasks.workspace.layout import Layout
from tests.conftest import flywheel, write_recipe

GSM8K = Path(__file__).resolve().parent / "fixtures" / "gsm8k"
OVERRIDES = {
    "run.name": "gsm8k-micro",
    "run.iterations": 1,
    "prompts.source": {"type": "hub", "dataset": str(GSM8K),
                       "splits": {"seed": "train[:10]", "probe": "train[10:14]", "train": "train[14:]", "test": "test"},
                       "text_column": "question", "answer_column": "answer", "target_column": "answer",
                       "answer_format": "gsm8k"},
    "pool.difficulty_schedule": None,
    "verifier.type": "math_verify",
}


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    import datasets

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def assert_gold_rewrites_score_correct(samples_path: Path, prompts_path: Path, tmp_path: Path) -> None:
    """The same samples, half rewritten to state the gold answer: exactly those become correct."""
    prompts = read_table(prompts_path, PROMPTS)
    samples = read_table(samples_path, SAMPLES).join(prompts.select("prompt_id", "answer"), on="prompt_id",
                                                     how="left", maintain_order="left")
    samples = samples.with_columns(
        text=pl.when(pl.col("sample_idx") % 2 == 0).then(pl.format("So it is {}. #### {}", "answer", "answer"))
        .otherwise(pl.lit("I cannot tell."))).drop("answer")
    fake = write_table(samples, tmp_path / "gold-samples.parquet", SAMPLES)
    rescored = pl.read_parquet(score(fake, prompts_path, VerifierConfig(type="math_verify"), RewardConfig(),
                                     None, tmp_path / "gold-scored.parquet"))
    assert rescored["correct"].to_list() == (rescored["sample_idx"] % 2 == 0).to_list()
    hits = rescored.filter(pl.col("correct")).join(prompts, on="prompt_id", how="left", maintain_order="left")
    assert hits["extracted_answer"].to_list() == hits["answer"].to_list()


def test_prepare_generate_score_in_process(tmp_path, offline_datasets):
    """prepare -> tiny model -> generate -> score, the stage functions without the orchestration."""
    from tasks.config.loading import load_recipe
    from tasks.models.tiny_model import build_tiny_llama
    from tasks.stages.generate import generate
    from tasks.stages.prepare import prepare
    from tasks.stages.train import seed_examples

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", OVERRIDES))
    prompts_path = prepare(recipe, tmp_path / "prompts.parquet")
    prompts = read_table(prompts_path, PROMPTS)
    assert seed_examples(prompts).height == 10  # the warm-up has its labelled solutions
    model = build_tiny_llama(recipe.model.init, 0, tmp_path / "model")
    samples = generate(model, prompts_path, recipe.generate, recipe.pool, iteration="0001", round_index=1,
                       temperature=1.0, seed=0, out_path=tmp_path / "samples.parquet")
    scored = pl.read_parquet(score(samples, prompts_path, recipe.verifier, recipe.reward, None,
                                   tmp_path / "scored.parquet"))
    assert scored.height == 10 * recipe.generate.k
    assert set(scored["prompt_id"]) == set(prompts.filter(pl.col("split") == "train")["prompt_id"])
    assert scored["correct"].dtype == pl.Boolean
    assert (scored["score"] == scored["correct"].cast(pl.Float64)).all()  # no reward model: score = correct
    assert_gold_rewrites_score_correct(samples, prompts_path, tmp_path)


@pytest.mark.slow
def test_micro_run_on_the_gsm8k_fixture(tmp_path, offline_datasets):
    """The whole flow (Prefect, DVC, git) for one iteration: about a minute on two cores."""
    recipe = write_recipe(tmp_path / "gsm8k-micro.yaml", OVERRIDES)
    ws = tmp_path / "ws"
    flywheel("run", "--workspace", str(ws), "--config", str(recipe), "--iterations", "1")
    layout = Layout(ws)

    prompts = read_table(layout.prompts, PROMPTS)
    assert dict(prompts.group_by("split").len().iter_rows()) == {"seed": 10, "probe": 4, "train": 10, "test": 8}
    assert (prompts["source"] == "hub:gsm8k").all()
    scored = pl.read_parquet(layout.scored("0001"))
    assert scored.height == 20  # 10 pool prompts x K=2
    assert scored["correct"].dtype == pl.Boolean and "extracted_answer" in scored.columns
    assert json.loads(layout.eval("0001").read_text())["pass@1"] is not None
    assert_gold_rewrites_score_correct(layout.samples("0001"), layout.prompts, tmp_path)
