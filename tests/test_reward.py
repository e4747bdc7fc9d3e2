"""Reward models: a tiny ORM trained here, loaded back from its local folder, ORM and PRM scoring."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.config.recipe import RewardConfig, TinyLlamaInit
from tasks.models.tiny_model import build_tiny_llama
from tasks.stages.reward import RewardScorer, add_rewards, build_reward_model, reward_enabled, train_orm

TINY = TinyLlamaInit(hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=32)


@pytest.fixture(scope="module")
def orm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("orm")
    policy = build_tiny_llama(TINY, 0, root / "policy")
    examples = pl.DataFrame({
        "q": ["Mia has 3 pens. Then gets 2 more. How many pens now?"] * 8,
        "text": [" 3+2=5. Answer: 5", " 3+2=6. Answer: 6"] * 4,
        "correct": [True, False] * 4,
    })
    cfg = RewardConfig(source="train", train_steps=30, learning_rate=5e-3, batch_size=8)
    stats = train_orm(policy, examples, cfg, seed=0, out_dir=root / "reward")
    assert stats["examples"] == 8 and stats["positive_rate"] == 0.5
    return root / "reward"


def test_orm_learns_to_prefer_correct_samples_and_reloads_from_folder(orm_dir):
    scorer = RewardScorer(orm_dir, "orm")
    q = "Mia has 3 pens. Then gets 2 more. How many pens now?"
    good, bad = scorer.score([q, q], [" 3+2=5. Answer: 5", " 3+2=6. Answer: 6"])
    assert -1.0 <= bad < good <= 1.0


def test_prm_takes_the_minimum_over_step_prefixes(orm_dir):
    scorer_orm, scorer_prm = RewardScorer(orm_dir, "orm"), RewardScorer(orm_dir, "prm")
    q = "Mia has 3 pens. Then gets 2 more. How many pens now?"
    text = " 3+2=5. Answer: 5"
    prm = scorer_prm.score([q], [text])[0]
    prefixes = scorer_orm.score([q, q], [" 3+2=5", text])
    assert prm == pytest.approx(float(np.min(prefixes)), abs=1e-6)


def test_add_rewards_combines_score_as_b_star_does(orm_dir):
    prompts = pl.DataFrame({"prompt_id": ["p"], "text": ["Mia has 3 pens. Then gets 2 more. How many pens now?"]})
    scored = pl.DataFrame({"prompt_id": ["p", "p"], "text": [" 3+2=5. Answer: 5", " 3+2=6. Answer: 6"],
                           "correct": [True, False]})
    out = add_rewards(scored, prompts, orm_dir, RewardConfig(source="train", weight=0.2))
    expected = out["correct"].cast(pl.Float64) + 0.2 * out["reward"]
    assert out["score"].to_list() == pytest.approx(expected.to_list())
    assert out["reward"].null_count() == 0


def test_without_a_reward_model_score_is_correctness(tmp_path):
    marker_dir = tmp_path / "reward"
    from tasks.config.recipe import Recipe

    build_reward_model(Recipe(), tmp_path / "unused", tmp_path / "unused.parquet", 0, marker_dir)
    assert not reward_enabled(marker_dir)
    scored = pl.DataFrame({"prompt_id": ["p", "p"], "text": ["a", "b"], "correct": [True, False]})
    out = add_rewards(scored, pl.DataFrame({"prompt_id": ["p"], "text": ["q"]}), marker_dir, RewardConfig())
    assert out["score"].to_list() == [1.0, 0.0] and out["reward"].null_count() == 2


def test_the_orm_does_not_depend_on_the_global_rng_state_before_it(orm_dir, tmp_path):
    """Its new score head is initialised from the stage seed, not from whatever ran earlier in the
    process (a vLLM engine, for one, re-seeds the global RNG when it starts)."""
    import hashlib

    import torch

    policy = orm_dir.parent / "policy"
    examples = pl.DataFrame({"q": ["Tom has 4 cups. Then gets 1 more. How many cups now?"] * 4,
                             "text": [" 4+1=5. Answer: 5", " 4+1=3. Answer: 3"] * 2, "correct": [True, False] * 2})
    cfg = RewardConfig(source="train", train_steps=2, batch_size=4)
    digests = []
    for i, earlier in enumerate((1, 12345)):
        torch.manual_seed(earlier)
        train_orm(policy, examples, cfg, seed=3, out_dir=tmp_path / f"r{i}")
        digests.append(hashlib.sha256((tmp_path / f"r{i}" / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
