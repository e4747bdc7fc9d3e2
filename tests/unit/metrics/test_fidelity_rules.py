"""The rules calibrate.fidelity and reward.arithmetic name (tasks/config/fidelity.py): the tie on the best
balance, the swept thresholds, the settings fidelity `reference` fixes, the score's arithmetic, and what
`flywheel init` freezes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.config.fidelity import REFERENCE_FIXED, REFERENCE_GRID
from tasks.config.recipe import freeze_fidelity
from tasks.config.recipe import CalibrateConfig, Recipe, RewardConfig, SelectConfig
from tasks.metrics.calibration_grid import calibration_grid, choose, ranked
from tasks.stages.reward import with_score
from tasks.stages.select import select_table


# ---------------------------------------------------------------- the tie on the best balance
def probe(rows: list[tuple[float, str, str, bool, float]]) -> pl.DataFrame:
    """rows: (temperature, prompt_id, text, correct, score); sample_idx in order per prompt and temperature."""
    df = pl.DataFrame(rows, schema={"temperature": pl.Float64, "prompt_id": pl.String, "text": pl.String,
                                    "correct": pl.Boolean, "score": pl.Float64}, orient="row")
    return df.with_columns(sample_idx=pl.int_range(pl.len()).over("temperature", "prompt_id").cast(pl.Int32),
                           reward=pl.col("score"), extracted_answer=pl.lit(None, dtype=pl.String))


# Per prompt, a correct sample scoring 0.9 and a wrong one scoring 0.3, at two temperatures. With n* = 1:
# at thresholds below 0.3 both are selected (1/1 * 1/2 = 0.5), from 0.3 to below 0.9 only the correct one
# (1.0), from 0.9 none (0.0). The best balance, 1.0, ties on 0.3, 0.4, 0.5 and 0.8 at both temperatures.
TIED = probe([(t, p, text, ok, score) for t in (0.7, 1.0) for p in ("a", "b")
              for text, ok, score in ((f"{p}-right", True, 0.9), (f"{p}-wrong", False, 0.3))])
THRESHOLDS = [0.95, 0.8, 0.5, 0.4, 0.3, 0.25, 0.0]  # unsorted on purpose


@pytest.mark.parametrize(("tie_lowest", "want"), [(True, 0.3), (False, 0.8)])
def test_ties_on_the_best_balance(tie_lowest, want):
    grid = calibration_grid(TIED, THRESHOLDS, n_star=1, k=2, tie_lowest=tie_lowest)
    at = dict(zip(grid.filter(pl.col("temperature") == 0.7)["threshold"],
                  grid.filter(pl.col("temperature") == 0.7)["balance_score"], strict=True))
    assert at == {0.0: 0.5, 0.25: 0.5, 0.3: 1.0, 0.4: 1.0, 0.5: 1.0, 0.8: 1.0, 0.95: 0.0}
    assert grid["chosen"].sum() == 1
    best = choose(grid)
    assert best == {"temperature": 0.7, "threshold": want, "balance_score": 1.0}  # ties on temperature: the lower
    top = ranked(grid, 4, tie_lowest)
    assert (top[0]["temperature"], top[0]["threshold"]) == (best["temperature"], best["threshold"])
    assert top[0] == grid.filter(pl.col("chosen")).select("temperature", "threshold", "balance_score",
                                                          "n_selected").to_dicts()[0]
    tied = [0.3, 0.4, 0.5, 0.8] if tie_lowest else [0.8, 0.5, 0.4, 0.3]
    assert [(r["temperature"], r["threshold"]) for r in top] == [(0.7, t) for t in tied]
    assert [r["n_selected"] for r in top] == [2] * 4


def test_the_tie_rule_follows_fidelity():
    assert CalibrateConfig(fidelity="ours").tie_lowest() is False  # the highest tied threshold
    assert CalibrateConfig(fidelity="reference").tie_lowest() is True
    assert CalibrateConfig(fidelity="legacy").tie_lowest() is False
    assert CalibrateConfig().tie_lowest() is False  # unset: a workspace recorded before the setting


# ---------------------------------------------------------------- the swept thresholds
def test_ours_with_an_injected_reference_sweeps_below_its_score():
    listed = CalibrateConfig().thresholds
    assert 1.0 in listed and len(listed) == 201
    for inject in ("balance", "train"):
        cfg = CalibrateConfig(fidelity="ours", inject_reference=inject)
        swept = cfg.swept_thresholds()
        assert swept == [t for t in listed if t < 1.0] and len(swept) == 200
        assert not any(t >= cfg.reference_score for t in swept)
    lower = CalibrateConfig(fidelity="ours", inject_reference="balance", reference_score=0.5).swept_thresholds()
    assert max(lower) == 0.49 and len(lower) == 150
    # no injection: nothing to drop
    assert CalibrateConfig(fidelity="ours").swept_thresholds() == listed


@pytest.mark.parametrize("fidelity", ["legacy", None])
def test_legacy_sweeps_the_list_as_given(fidelity):
    cfg = CalibrateConfig(fidelity=fidelity, inject_reference="balance")
    assert cfg.swept_thresholds() == cfg.thresholds == CalibrateConfig().thresholds
    assert 1.0 in cfg.swept_thresholds()


def test_reference_fixes_its_settings():
    cfg = CalibrateConfig(fidelity="reference")
    assert cfg.thresholds == REFERENCE_GRID and cfg.swept_thresholds() == REFERENCE_GRID
    assert len(REFERENCE_GRID) == 200 and REFERENCE_GRID[0] == -1.0 and REFERENCE_GRID[-1] == 0.9900000000000014
    assert (cfg.average_over, cfg.threshold_from, cfg.inject_reference) == ("selected", "full", "train")
    assert (cfg.reference_score, cfg.n_star) == (1.0, 8)
    assert {k: getattr(cfg, k) for k in REFERENCE_FIXED} == REFERENCE_FIXED
    # setting one to the reference's own value is allowed
    assert CalibrateConfig(fidelity="reference", average_over="selected").average_over == "selected"
    # through a whole recipe as well
    recipe = Recipe.model_validate({"calibrate": {"enabled": True, "fidelity": "reference"}})
    assert recipe.calibrate.swept_thresholds() == REFERENCE_GRID and recipe.calibrate.average_over == "selected"


def test_reference_refuses_a_conflicting_setting():
    with pytest.raises(ValueError) as err:
        CalibrateConfig.model_validate({"fidelity": "reference", "average_over": "all"})
    message = str(err.value)
    assert "average_over" in message
    assert "remove calibrate.average_over or set calibrate.fidelity to 'ours'" in message
    with pytest.raises(ValueError, match="average_over"):
        Recipe.model_validate({"calibrate": {"fidelity": "reference", "average_over": "all"}})
    with pytest.raises(ValueError, match="thresholds at its grid"):
        CalibrateConfig.model_validate({"fidelity": "reference", "thresholds": [0.0, 0.5]})


# ---------------------------------------------------------------- the score's arithmetic
WRONG_REWARD_1 = pl.DataFrame({"prompt_id": ["a"], "sample_idx": pl.Series([0], dtype=pl.Int32),
                               "text": ["x Answer: 3"], "correct": [False],
                               "reward": pl.Series([np.float32(1.0)])})  # float32, as a reward model writes it
PROMPTS = pl.DataFrame({"prompt_id": ["a"], "text": ["q"]})


@pytest.mark.parametrize(("arithmetic", "score", "kept"), [
    ("float64", 0.2, 0), ("reference", 0.2, 0),
    ("float32", 0.20000000298023224, 1), (None, 0.20000000298023224, 1)])
def test_an_incorrect_sample_with_reward_one(arithmetic, score, kept):
    assert WRONG_REWARD_1.schema["reward"] == pl.Float32
    out = with_score(WRONG_REWARD_1, RewardConfig(arithmetic=arithmetic))
    assert out.schema["score"] == pl.Float64
    assert out["score"][0] == score  # exactly: float32's 0.2 is 0.20000000298023224
    assert select_table(out, PROMPTS, SelectConfig(), 0.2).height == kept


def _random_rewards(n: int = 20_000) -> tuple[pl.DataFrame, np.ndarray]:
    """float32 rewards in [-1, 1] with random correctness, and the reference's score of each in numpy:
    prm_score / 5.0 + orm_score (metric_modiacc_auto.py 101)."""
    rng = np.random.default_rng(0)
    reward = rng.uniform(-1.0, 1.0, size=n).astype(np.float32)
    correct = rng.random(n) < 0.5
    want = reward.astype(np.float64) / 5.0 + correct.astype(np.float64)
    return pl.DataFrame({"correct": correct, "reward": pl.Series(reward)}), want


def test_dividing_and_multiplying_by_one_fifth_differ():
    """What makes the bitwise test below able to fail: 0.2 * r and r / 5.0 differ in the last bit for many
    float32 rewards r."""
    df, _ = _random_rewards()
    r64 = df["reward"].cast(pl.Float64).to_numpy()
    differ = 0.2 * r64 != r64 / 5.0
    assert 1000 < np.count_nonzero(differ) < r64.size
    assert np.all(np.abs(0.2 * r64 - r64 / 5.0) <= np.spacing(np.abs(r64 / 5.0)))  # by one ulp at most


def test_reference_arithmetic_is_float64_within_an_ulp():
    df, want = _random_rewards()
    got = with_score(df, RewardConfig(arithmetic="reference"))["score"].to_numpy()
    assert got.dtype == np.float64
    assert np.all(np.abs(got - want) <= np.spacing(np.abs(want)))
    # a null reward counts 0
    null = with_score(pl.DataFrame({"correct": [True], "reward": pl.Series([None], dtype=pl.Float32)}),
                      RewardConfig(arithmetic="reference"))
    assert null["score"].to_list() == [1.0]


def test_reference_arithmetic_is_reward_over_five_bitwise():
    df, want = _random_rewards()
    got = with_score(df, RewardConfig(arithmetic="reference"))["score"].to_numpy()
    float64 = with_score(df, RewardConfig(arithmetic="float64"))["score"].to_numpy()
    assert not np.array_equal(float64, want)  # weight * reward is not reward / 5.0
    assert np.array_equal(got.view(np.int64), want.view(np.int64))


# ---------------------------------------------------------------- what init freezes
def test_freeze_fidelity():
    fresh = freeze_fidelity(Recipe())
    assert (fresh.calibrate.fidelity, fresh.reward.arithmetic) == ("ours", "float64")
    assert Recipe().calibrate.fidelity is None and Recipe().reward.arithmetic is None  # freezing copies
    ref = freeze_fidelity(Recipe.model_validate({"calibrate": {"enabled": True, "fidelity": "reference"}}))
    assert (ref.calibrate.fidelity, ref.reward.arithmetic) == ("reference", "reference")
    assert ref.calibrate.swept_thresholds() == REFERENCE_GRID
    # set values are kept
    kept = freeze_fidelity(Recipe.model_validate({"reward": {"arithmetic": "float32"}}))
    assert (kept.calibrate.fidelity, kept.reward.arithmetic) == ("ours", "float32")
    # an explicit legacy means the old rules whole: the float32 term too
    old = freeze_fidelity(Recipe.model_validate({"calibrate": {"fidelity": "legacy"}}))
    assert (old.calibrate.fidelity, old.reward.arithmetic) == ("legacy", "float32")


def test_reference_arithmetic_needs_weight_one_fifth():
    with pytest.raises(ValueError, match="weight"):
        Recipe.model_validate({"reward": {"arithmetic": "reference", "weight": 0.3}})
    with pytest.raises(ValueError, match="weight"):
        RewardConfig(arithmetic="reference", weight=0.3)
    assert RewardConfig(arithmetic="reference", weight=0.2).weight == 0.2
    assert RewardConfig(arithmetic="float64", weight=0.3).weight == 0.3
