"""Adaptive K (tasks/sampling/allocation.py): the budget is spent exactly, greedy is the optimum,
harder prompts get more, bounds hold, unseen prompts use the prior, and the rows say why."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest

from tasks.config.allocation import AllocationConfig
from tasks.data.schema import ALLOCATION, conform
from tasks.errors import ConfigError
from tasks.sampling.allocation import (budget_metrics, estimate_p, expected_kept, greedy_counts, history_counts,
                                       marginal_gains, plan_allocation)

ON = AllocationConfig(enabled=True)


def pool_of(difficulties: list[int | None]) -> pl.DataFrame:
    return pl.DataFrame({"prompt_id": [f"p{i:02d}" for i in range(len(difficulties))], "difficulty": difficulties},
                        schema={"prompt_id": pl.String, "difficulty": pl.Int32})


def scored_of(correct_of: dict[str, tuple[int, int]], origin: bool = False) -> pl.DataFrame:
    """A scored table with n samples, c of them correct, per prompt."""
    rows = [(pid, j, j < c) for pid, (n, c) in correct_of.items() for j in range(n)]
    df = pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "correct": pl.Boolean},
                      orient="row")
    return df.with_columns(origin=pl.lit("self")) if origin else df


def exact_kept(p: float, k: int, cap: int) -> float:
    """E[min(C, cap)], C ~ Binomial(k, p), summed term by term."""
    return sum(min(c, cap) * math.comb(k, c) * p ** c * (1 - p) ** (k - c) for c in range(k + 1))


def plan(pool, history, cfg=ON, **kw):
    counts = None if history is None else history_counts(history, pool)
    args = {"k": 8, "cap": 1, "iteration": "0002", "seed": 0, "prev_iteration": "0001"} | kw
    return plan_allocation(pool, counts, cfg, **args)


def test_uniform_without_history_spends_budget_exactly():
    pool = pool_of([2] * 7)
    out = plan(pool, None, AllocationConfig(enabled=True, budget=52))
    assert out["k"].sum() == 52 and set(out["k"].to_list()) == {7, 8}  # 52 = 7 x 7 + 3
    assert (out["reason"] == "uniform").all() and out["p_hat"].is_null().all()
    again = plan(pool, None, AllocationConfig(enabled=True, budget=52))
    assert out.equals(again)  # the remainder's prompts are drawn with the stage seed
    other = plan(pool, None, AllocationConfig(enabled=True, budget=52), seed=1)
    assert other["k"].sum() == 52


def test_off_gives_generate_k_to_every_prompt_even_with_history():
    pool = pool_of([2, 3, 4])
    out = plan(pool, scored_of({"p00": (8, 8), "p01": (8, 0)}), AllocationConfig(), k=40)
    assert out["k"].to_list() == [40, 40, 40] and (out["reason"] == "uniform").all()  # k_max does not apply
    assert out["budget"].unique().to_list() == [120]


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_marginal_gains_are_the_binomial_differences(cap):
    p = np.array([0.01, 0.2, 0.5, 0.93])
    gains = marginal_gains(p, 9, cap)
    for i, pi in enumerate(p):
        want = [exact_kept(pi, j, cap) - exact_kept(pi, j - 1, cap) for j in range(1, 10)]
        assert np.allclose(gains[i], want, atol=1e-11)
    assert (np.diff(gains, axis=1) <= 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_greedy_equals_bruteforce_optimum(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, size=4)
    cap = int(rng.integers(1, 3))
    k_min, k_max = 1, 5
    for budget in range(4 * k_min, 13):
        ks, _ = greedy_counts(marginal_gains(p, k_max, cap), k_min, budget - 4 * k_min)
        assert ks.sum() == budget and ((k_min <= ks) & (ks <= k_max)).all()
        best = max(sum(exact_kept(pi, ki, cap) for pi, ki in zip(p, combo))
                   for combo in itertools.product(range(k_min, k_max + 1), repeat=4) if sum(combo) == budget)
        assert sum(exact_kept(pi, ki, cap) for pi, ki in zip(p, ks)) == pytest.approx(best, abs=1e-9)
        assert expected_kept(p, ks, cap) == pytest.approx(best, abs=1e-9)


def test_harder_prompts_get_more():
    pool = pool_of([3] * 6)
    history = scored_of({"p00": (8, 8), "p01": (8, 7), "p02": (8, 4), "p03": (8, 2), "p04": (8, 1), "p05": (8, 0)})
    out = plan(pool, history, k=4).sort("prompt_id")
    k, p_hat = out["k"].to_numpy(), out["p_hat"].to_numpy()
    assert out["k"].sum() == 24
    assert k[0] == ON.k_min and out["reason"][0] == "k_min"  # 8/8: solved, the fewest samples
    assert k[5] > k[0] and k[5] >= k[4] >= k[2]  # 0/8 at prior 0.46 earns the most
    assert (np.diff(plan(pool, history, k=8).sort("prompt_id")["k"].to_numpy()) >= 0).all()  # a larger budget too
    easy = np.argsort(p_hat[p_hat >= 0.5])
    assert (np.diff(k[p_hat >= 0.5][easy]) <= 0).all()  # above p_hat 0.5, more evidence of success, fewer samples


def test_bounds_and_reserve():
    pool = pool_of([2] * 10)
    history = scored_of({f"p{i:02d}": (8, i % 9) for i in range(10)})
    cfg = AllocationConfig(enabled=True, budget=100, k_min=3, k_max=12)
    out = plan(pool, history, cfg, reserve=15)
    assert out["k"].min() >= 3 and out["k"].max() <= 12
    assert out["k"].sum() == 85  # the reserve is kept for the hint pass
    assert (out["k_hint"] == 0).all()
    m = budget_metrics(out, n_first_pass=85)
    assert m["budget"] == 100 and m["budget_unspent"] == 15 and m["k_min_used"] >= 3 and m["k_max_used"] <= 12
    # more budget than k_max allows: every prompt at k_max, the rest unspent and reported
    big = plan(pool, history, AllocationConfig(enabled=True, budget=500, k_max=20))
    assert (big["k"] == 20).all() and (big["reason"] == "k_max").all()
    assert budget_metrics(big, n_first_pass=200)["budget_unspent"] == 300
    with pytest.raises(ConfigError, match="allocation.budget"):
        plan(pool, history, AllocationConfig(enabled=True, budget=19))


def test_unseen_prompts_use_difficulty_prior_then_overall_mean():
    pool = pool_of([2, 2, 3, 4, None])
    history = scored_of({"p00": (8, 6), "x1": (8, 2), "x2": (4, 4)})  # x1 and x2 are not in this pool
    prompts = pl.concat([pool, pool_of([2, 3]).with_columns(prompt_id=pl.Series(["x1", "x2"]))])
    est = estimate_p(pool, history_counts(history, prompts), ON).sort("prompt_id")
    level2, overall = (6 / 8 + 2 / 8) / 2, (6 / 8 + 2 / 8 + 4 / 4) / 3
    assert est["prior_p"].to_list() == pytest.approx([level2, level2, 1.0, overall, overall])
    assert est["p_hat"][0] == pytest.approx((6 + 4 * level2) / (8 + 4))  # seen: shrunk towards its level
    assert est["p_hat"][1] == pytest.approx(level2)  # unseen at difficulty 2
    assert est["p_hat"][2] == pytest.approx(1 - ON.p_floor)  # clipped: a solved level still gets some doubt
    assert est["p_hat"][3] == pytest.approx(overall)  # difficulty 4 never seen: the history's overall mean
    out = plan_allocation(pool, history_counts(history, prompts), AllocationConfig(enabled=True, k_min=1, k_max=12),
                          k=8, cap=1, iteration="0002", seed=0, prev_iteration="0001").sort("prompt_id")
    assert out["reason"][1] in {"prior", "k_min", "k_max"} and out["prev_n"][1] is None


def test_history_counts_self_origin_only():
    history = scored_of({"p00": (4, 1)}, origin=True)
    hinted = scored_of({"p00": (3, 3)}).with_columns(pl.col("sample_idx") + 1000, origin=pl.lit("hinted"))
    counts = history_counts(pl.concat([history, hinted]), pool_of([2]))
    assert counts.row(0, named=True) == {"prompt_id": "p00", "n": 4, "c": 1, "difficulty": 2}


def test_rows_explain_allocation():
    pool = pool_of([2, 2, 3])
    out = plan(pool, scored_of({"p00": (8, 8), "p01": (8, 1)}), AllocationConfig(enabled=True, budget=12, k_max=20))
    conform(out, ALLOCATION)  # the schema's columns and no nulls where the schema forbids them
    rows = {r["prompt_id"]: r for r in out.iter_rows(named=True)}
    assert rows["p00"]["reason"] == "k_min" and rows["p00"]["prev_n"] == 8 and rows["p00"]["prev_c"] == 8
    assert rows["p01"]["reason"] == "history" and rows["p01"]["prev_iteration"] == "0001"
    assert rows["p02"]["prev_n"] is None and rows["p02"]["prev_iteration"] is None
    assert rows["p02"]["prior_p"] is not None and rows["p02"]["p_hat"] == pytest.approx(rows["p02"]["prior_p"])
    assert all(r["gain_cutoff"] is not None and r["budget"] == 12 and r["iteration"] == "0002" for r in rows.values())
    assert out["k"].sum() == 12
    uniform = plan(pool, None)
    assert uniform["prev_n"].is_null().all() and uniform["gain_cutoff"].is_null().all()
    assert uniform["prior_p"].is_null().all()


# ---------------------------------------------------------------- recipe refusals (tasks/config/checks.py)
def micro(**allocation):
    import json

    from tasks.config.loading import recipe_from_dict
    from tests.conftest import MICRO_RECIPE

    data = json.loads(json.dumps(MICRO_RECIPE))
    data["allocation"] = {"enabled": True, **allocation}
    return recipe_from_dict(data)


@pytest.mark.parametrize("allocation, field, needle", [
    ({"k_min": 5, "k_max": 4}, "allocation.k_min", "above allocation.k_max 4"),
    ({"budget": 31}, "allocation.budget", "16 pool prompts"),  # 16 prompts x k_min 2
    ({"k_min": 3}, "allocation.k_min", "above generate.k 2"),  # budget null: 16 x generate.k
])
def test_budgets_and_bounds_that_cannot_hold_are_refused(allocation, field, needle):
    from tasks.config.checks import check_recipe

    with pytest.raises(ConfigError) as exc:
        check_recipe(micro(**allocation))
    msg = str(exc.value)
    assert "\n" not in msg and "Fix:" in msg and field in msg and needle in msg, msg


def test_a_hint_reserve_that_leaves_too_few_first_pass_samples_is_refused_before_any_compute():
    import json

    from tasks.config.checks import check_recipe
    from tasks.config.loading import recipe_from_dict
    from tests.conftest import MICRO_RECIPE

    data = json.loads(json.dumps(MICRO_RECIPE))  # 16 pool prompts x generate.k 2: a budget of 32
    data["allocation"] = {"enabled": True}  # k_min 2: the first pass needs all 32
    data["hints"] = {"enabled": True, "reserve": 0.25}
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe_from_dict(data))
    msg = str(exc.value)
    assert "\n" not in msg and "allocation.budget" in msg and "less hints.reserve's 8" in msg and "40" in msg, msg
    data["allocation"]["k_min"] = 1  # 16 first-pass samples at the least, 24 left
    check_recipe(recipe_from_dict(data))


def test_k_max_stays_below_the_hint_sample_indices():
    with pytest.raises(ConfigError, match="allocation.k_max"):
        micro(k_max=1000)


def test_sharded_hf_generation_is_refused_with_allocation():
    import json

    from tasks.config.checks import check_recipe
    from tasks.config.loading import recipe_from_dict
    from tests.conftest import MICRO_RECIPE

    data = json.loads(json.dumps(MICRO_RECIPE)) | {"allocation": {"enabled": True}, "scale": {"runner": "dask"}}
    with pytest.raises(ConfigError, match="allocation.enabled.*generate.backend: vllm"):
        check_recipe(recipe_from_dict(data))
    check_recipe(micro(budget=32))  # the smallest budget the pool allows passes


def test_the_selection_bound_uses_k_max():
    from tasks.config.checks import _max_selected

    assert _max_selected(micro(k_max=6).model_copy(update={"select": micro().select.model_copy(
        update={"cap_per_prompt": 4})}), 16) == 64  # min(cap 4, k_max 6) x 16, above generate.k's 2 x 16


def test_explain_says_why_in_one_sentence():
    from tasks.sampling.allocation import explain

    pool = pool_of([3, 3, 4])
    history = scored_of({"p00": (8, 1), "p01": (8, 8)})
    out = {r["prompt_id"]: r for r in plan(pool, history, AllocationConfig(enabled=True, budget=12, k_max=16))
           .iter_rows(named=True)}
    hard = explain(out["p00"], prior_strength=4)
    assert hard.startswith(f"{out['p00']['k']} samples: p_hat ") and "from 1/8 correct at 0001" in hard
    assert "rate 0.562 of difficulty 3 (strength 4)" in hard and "budget 12, marginal-gain cutoff" in hard
    assert "(the k_min floor)" in explain(out["p01"])
    assert "the rate of all prompts (not sampled at the previous iteration)" in explain(out["p02"])
    first = plan(pool, None, AllocationConfig(enabled=True, budget=20)).row(0, named=True)
    assert explain(first).endswith("the budget of 20 shared evenly (no earlier iteration to learn from)")
    hinted = {**out["p00"], "k_hint": 4, "hint_kind": "partial", "hint_reason": "0 correct of 8 < m=1"}
    assert explain(hinted).endswith("; then 4 hinted samples (partial): 0 correct of 8 < m=1")


def test_hint_pass_fills_its_columns():
    from tasks.sampling.allocation import record_hint_pass

    pool = pool_of([3, 3, 4])
    first = plan(pool, None, AllocationConfig(enabled=True, budget=12), reserve=3)
    assert first["k"].sum() == 9
    verified = scored_of({"p00": (3, 0), "p01": (3, 2), "p02": (3, 0)})
    targets = pl.DataFrame({"prompt_id": ["p00", "p02"], "hint_kind": ["partial", "answer"],
                            "hint_reason": ["0 correct of 3 < m=1"] * 2})
    out = record_hint_pass(first, verified, targets, k_hint=1).sort("prompt_id")
    conform(out, ALLOCATION)
    assert out["first_pass_correct"].to_list() == [0, 2, 0] and out["k_hint"].to_list() == [1, 0, 1]
    assert out["hint_kind"].to_list() == ["partial", None, "answer"] and out["k"].equals(first.sort("prompt_id")["k"])
    assert budget_metrics(out, 9, 2)["budget_unspent"] == 1
