"""calibrate.fidelity `reference` against a line-by-line port of the B-STaR reference code.

The port (bench/bstar_reference_port.py) follows hkust-nlp/B-STaR at a0f5d95 line by line. A synthesizer
writes the same probe samples twice: as this project's scored table (text "... Answer: N") and as the reference's records (output "...\\n\\n# Answer\\n\\nN").
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bstar_reference_port import (MARK, NO_CAP, PortChoice, cal_modi_acc_soft, determine_hyper,  # noqa: F401
                                        exact_modi_acc, find_rewardbase, find_strategy, get_unique_trn_json,
                                        process_data)
from tasks.config.fidelity import REFERENCE_GRID
from tasks.config.recipe import Recipe
from tasks.metrics.bstar_reference import reference_view
from tasks.metrics.calibration_grid import calibration_grid, choose, ranked
from tasks.stages.calibrate import as_chosen_by, grid_for, reference_for
from tasks.verify.answers import extract_answer


# ================================================================ the synthesizer
# rewards drawn from a small set (ties across thresholds), one float32 whose score r/5 is exactly a grid
# value (REFERENCE_GRID[100] = 7.5e-16: the only grid value a float32 reward reaches), and random float32s
GRID_HIT = float(np.float32(3.7643499428696714e-15))
SMALL_REWARDS = (-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, GRID_HIT)
TEMPERATURE_CHOICES = (0.3, 0.5, 0.7, 0.9, 1.1)


@dataclass
class Synth:
    temperatures: list[float]
    k: int
    scored: pl.DataFrame  # this project's probe-scored table (all temperatures)
    prompts: pl.DataFrame  # prompt_id, text, answer, target (the official solution), source, split
    reference: pl.DataFrame  # prompt_id, text: the official solutions as this project injects them
    per_temperature: dict[float, tuple[list[dict], list[dict]]]  # the reference's input and ref records


def synthesize(seed: int, n_prompts: int | None = None, k: int | None = None, n_temps: int | None = None
               ) -> Synth:
    """P prompts, each with a gold answer and an official solution; at each of several ascending
    temperatures, K samples per prompt: a body (drawn from a few per prompt, so texts repeat; sometimes the
    official solution itself), then no answer (now and then for all K samples of a prompt), the gold or a
    wrong one, and a float32 reward in [-1, 1]. A wrong sample's reward stays below a cap drawn per
    temperature, so the best threshold moves from temperature to temperature."""
    rng = np.random.default_rng(seed)
    n_prompts = int(rng.integers(6, 21)) if n_prompts is None else n_prompts
    k = int(rng.integers(2, 17)) if k is None else k
    n_temps = int(rng.integers(1, 4)) if n_temps is None else n_temps
    temperatures = sorted(float(t) for t in rng.choice(TEMPERATURE_CHOICES, size=n_temps, replace=False))
    gold = [str(int(g)) for g in rng.integers(10, 100, size=n_prompts)]
    official = [f"Official chain {p}: {gold[p]} counted" for p in range(n_prompts)]
    questions = [f"Question {p}: how many are left?" for p in range(n_prompts)]
    ref_prompt = [f"# Question\n\n{q}\n\n# Solution\n\n" for q in questions]
    skill = rng.uniform(0.15, 0.95, size=n_prompts)  # chance a sample states the gold
    silent = rng.uniform(0.0, 0.35, size=n_prompts)  # chance a sample states no answer
    bodies = rng.integers(1, k + 2, size=n_prompts)  # distinct bodies per prompt: few means repeats
    rows, per_temperature = [], {}
    for temp in temperatures:
        wrong_cap = float(rng.choice([1.0, 0.5, 0.25, 0.0, GRID_HIT, -0.5]))
        input_lines = []
        for p in range(n_prompts):
            mute = rng.random() < 0.08  # no sample of this prompt states an answer at this temperature
            for i in range(k):
                u = rng.random()
                if mute or u < silent[p]:
                    answer = None
                elif u < silent[p] + (1 - silent[p]) * skill[p]:
                    answer = gold[p]
                else:
                    answer = str(int(gold[p]) + int(rng.choice([-3, -1, 1, 2, 10])))
                if answer == gold[p] and rng.random() < 0.1:
                    body = official[p]  # the official solution, word for word
                else:
                    body = f"Chain {p}.{int(rng.integers(0, bodies[p]))} of steps"
                cap = 1.0 if answer == gold[p] else wrong_cap
                if rng.random() < 0.55:
                    reward = float(rng.choice([r for r in SMALL_REWARDS if r <= cap]))
                else:
                    reward = float(np.float32(rng.uniform(-1.0, cap)))
                ours = body if answer is None else f"{body} Answer: {answer}"
                theirs = body if answer is None else f"{body}{MARK}{answer}"
                # a PRM's step rewards whose minimum is the reward (metric_modiacc_auto.py 95)
                steps = [reward] + [min(1.0, reward + float(rng.choice([0.0, 0.25, 1.0])))
                                    for _ in range(int(rng.integers(0, 3)))]
                rng.shuffle(steps)
                rows.append({"prompt_id": f"p{p:02d}", "sample_idx": i, "temperature": temp, "text": ours,
                             "correct": answer == gold[p], "reward": reward})
                input_lines.append({"idx": p, "prompt": ref_prompt[p], "output": theirs, "reward": steps})
        ref_lines = [{"prompt": ref_prompt[p], "response": f"{official[p]}{MARK}{gold[p]}"} for p in range(n_prompts)]
        per_temperature[temp] = (input_lines, ref_lines)
    scored = pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "temperature": pl.Float64,
                                        "text": pl.String, "correct": pl.Boolean, "reward": pl.Float64})
    scored = scored.with_columns(
        score=pl.col("correct").cast(pl.Float64) + 0.2 * pl.col("reward"),
        extracted_answer=extract_answer(pl.col("text")))
    ids = [f"p{p:02d}" for p in range(n_prompts)]
    ours_official = [f"{official[p]} Answer: {gold[p]}" for p in range(n_prompts)]
    prompts = pl.DataFrame({"prompt_id": ids, "text": questions, "answer": gold, "target": ours_official,
                            "source": ["file"] * n_prompts, "split": ["probe"] * n_prompts})
    reference = pl.DataFrame({"prompt_id": ids, "text": ours_official})
    return Synth(temperatures, k, scored, prompts, reference, per_temperature)


def our_grid(s: Synth) -> pl.DataFrame:
    return calibration_grid(reference_view(s.scored, s.prompts, "answer_match"), REFERENCE_GRID, n_star=8, k=s.k,
                            average_over="selected", reference=s.reference, reference_score=1.0, tie_lowest=True)


def cell(d: dict) -> tuple[float, float]:
    return float(d["temperature"]), float(d["threshold"])


# ================================================================ the port itself
def test_port_sweeps_the_reference_grid_and_ignores_order():
    s = synthesize(3, n_prompts=5, k=4, n_temps=1)
    input_lines, ref_lines = s.per_temperature[s.temperatures[0]]
    trn_list = process_data(input_lines, ref_lines, random.Random(0))
    _, _, cells = find_strategy(trn_list, NO_CAP)
    assert [c[0] for c in cells] == REFERENCE_GRID  # the same floats, drift included
    assert cells[-1][0] == 0.9900000000000014 and len(cells) == 200
    # another shuffle of the records: the same sets and the same balances (up to the float sum's order)
    _, _, again = find_strategy(process_data(input_lines, ref_lines, random.Random(1)), NO_CAP)
    assert [sorted(map(str, c[2])) for c in again] == [sorted(map(str, c[2])) for c in cells]
    assert [c[1] for c in again] == pytest.approx([c[1] for c in cells], abs=1e-15)


def test_port_by_hand():
    """One query, worked out from the reference's rules."""
    resp = f"official{MARK}7"
    records = [{"idx": 0, "prompt": "# Question\n\nq\n\n# Solution\n\n", "output": out, "reward": r}
               for out, r in [(f"a{MARK}7", [0.5, 0.1]), (f"b{MARK}8", [1.0]), ("no answer", [1.0]),
                              (f"a{MARK}7", [-1.0]), (f"official{MARK}7", [0.0])]]
    trn = process_data(records, [{"prompt": "# Question\n\nq\n\n# Solution\n\n", "response": resp}], random.Random(0))
    # scores: a 1.02 and 0.8, b 0.2, official (sample) 1.0 and (appended) 1.0; "no answer" is no candidate
    unique = get_unique_trn_json(64, trn, 0.19)
    assert sorted(u["output"] for u in unique) == sorted([f"a{MARK}7", f"b{MARK}8", resp])
    assert cal_modi_acc_soft(unique) == 2 * (2 / 3) / 8
    assert len(get_unique_trn_json(64, trn, 0.2)) == 2  # b scores 0.2, and 0.2 > 0.2 is false
    assert len(get_unique_trn_json(1, trn, -1.0)) == 1  # the cap counts before dedup
    assert get_unique_trn_json(1, trn, -1.0)[0]["output"] == f"a{MARK}7"


# ================================================================ (a) every cell, (b) the choice
FIXED_SEEDS = (0, 1, 2, 5, 11)


@functools.lru_cache(maxsize=None)
def fixed(seed: int) -> tuple[Synth, pl.DataFrame, PortChoice]:
    """A synthesized probe set, our grid on it and the port's sweep (shared by the tests of a seed)."""
    s = synthesize(seed)
    return s, our_grid(s), determine_hyper(s.per_temperature, NO_CAP, shuffle_seed=seed)


def test_fixed_seeds_exercise_what_they_should():
    """Ties across thresholds, unanswered samples (all of a prompt's, at some temperature), repeated texts,
    sampled copies of the official solution, and a candidate scoring exactly a grid value."""
    hits = 0
    for seed in FIXED_SEEDS:
        s, grid, _ = fixed(seed)
        assert s.k + 1 <= 64  # the cap never binds: max_samples reaches K samples + the official one
        assert grid["balance_score"].n_unique() < grid.height / 4
        assert s.scored.select(pl.struct("temperature", "prompt_id", "text").is_duplicated().any()).item()
        assert s.scored["text"].is_in(s.reference["text"].implode()).any()
        # a deduplicated text whose best score is a grid value: selected below it, not at it
        view = reference_view(s.scored, s.prompts, "answer_match")
        best = view.group_by("temperature", "prompt_id", "text").agg(pl.col("score").max())
        hits += best["score"].is_in(REFERENCE_GRID).sum()
    assert hits > 0
    mute = pl.concat([fixed(seed)[0].scored for seed in FIXED_SEEDS]).group_by("temperature", "prompt_id").agg(
        pl.col("extracted_answer").is_null().all())
    assert mute["extracted_answer"].any()


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_every_cell_matches_the_port(seed):
    s, grid, port = fixed(seed)
    assert grid["temperature"].unique().sort().to_list() == s.temperatures
    for temp in s.temperatures:
        rows = grid.filter(pl.col("temperature") == temp).sort("threshold")
        assert rows["threshold"].to_list() == REFERENCE_GRID
        want = port.cells[temp]
        assert rows["n_selected"].to_list() == [n for _, _, n, _ in want]
        got = rows["balance_score"].to_numpy()
        np.testing.assert_allclose(got, [acc for _, acc, _, _ in want], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got, [float(x) for _, _, _, x in want], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_choice_matches_the_port(seed):
    s, grid, port = fixed(seed)
    ours = choose(grid)
    assert cell(ours) == (port.temperature, port.threshold)
    assert ours["balance_score"] == pytest.approx(float(port.balance), abs=1e-12)
    assert cell(ranked(grid, 1, tie_lowest=True)[0]) == cell(ours)
    # the best balance is tied on several thresholds, so the tie rule decides: the first (lowest), as the
    # reference's strict `>`; the highest would be another cell
    tied = grid.filter((pl.col("temperature") == ours["temperature"])
                       & (pl.col("balance_score") == ours["balance_score"]))["threshold"]
    assert tied.len() > 1 and ours["threshold"] == tied.min()
    highest = calibration_grid(reference_view(s.scored, s.prompts, "answer_match"), REFERENCE_GRID, n_star=8,
                               k=s.k, average_over="selected", reference=s.reference, tie_lowest=False)
    assert cell(choose(highest)) != (port.temperature, port.threshold)


def test_tied_temperatures_go_to_the_first():
    """The same samples at two temperatures: the reference takes the first in list order (determine_hyper.py
    223, temperatures ascending), and so do we."""
    s = synthesize(7, n_temps=1)
    (temp,) = s.temperatures
    lines = s.per_temperature[temp]
    scored = pl.concat([s.scored.with_columns(temperature=pl.lit(t)) for t in (0.4, 0.6)])
    grid = calibration_grid(reference_view(scored, s.prompts, "answer_match"), REFERENCE_GRID, n_star=8, k=s.k,
                            average_over="selected", reference=s.reference, tie_lowest=True)
    port = determine_hyper({0.4: lines, 0.6: lines}, NO_CAP, exact=False)
    assert port.temperature == 0.4 == choose(grid)["temperature"]
    assert choose(grid)["threshold"] == port.threshold
    assert grid.filter(pl.col("temperature") == 0.4)["balance_score"].equals(
        grid.filter(pl.col("temperature") == 0.6)["balance_score"])


def _candidate_scores(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each answered sample's score in our reference view and in the port (metric_modiacc_auto.py 95-101),
    in the same order (temperature, prompt, sample)."""
    s, _, _ = fixed(seed)
    view = reference_view(s.scored, s.prompts, "answer_match").filter(pl.col("extracted_answer").is_not_null())
    theirs = []
    for temp in s.temperatures:
        input_lines, ref_lines = s.per_temperature[temp]
        response = {line["prompt"]: line["response"] for line in ref_lines}
        for line in input_lines:
            if MARK in line["output"]:
                orm_score = 1.0 if line["output"].split(MARK)[-1] == response[line["prompt"]].split(MARK)[-1] else 0.0
                theirs.append(min(line["reward"]) / 5.0 + orm_score)
    return view["score"].to_numpy(), np.array(theirs)


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_scores_sit_on_the_same_side_of_every_threshold(seed):
    ours, theirs = _candidate_scores(seed)
    assert ours.size == theirs.size > 0
    assert np.all(np.abs(ours - theirs) <= np.spacing(np.abs(theirs)))  # one ulp at most (see below)
    grid = np.asarray(REFERENCE_GRID)
    assert np.array_equal(np.searchsorted(grid, ours, side="left"), np.searchsorted(grid, theirs, side="left"))


def test_scores_are_the_references_bitwise():
    ours, theirs = zip(*(_candidate_scores(seed) for seed in FIXED_SEEDS))
    assert np.array_equal(np.concatenate(ours).view(np.int64), np.concatenate(theirs).view(np.int64))


# ================================================================ (c) through the stage API
@pytest.mark.parametrize("seed", FIXED_SEEDS[:3])
def test_stage_api_matches_the_port(seed):
    s, direct, port = fixed(seed)
    recipe = Recipe.model_validate({"calibrate": {"enabled": True, "fidelity": "reference",
                                                  "temperatures": s.temperatures, "k": s.k},
                                    "verifier": {"type": "answer_match"}})
    cfg = recipe.calibrate
    assert cfg.swept_thresholds() == REFERENCE_GRID and cfg.tie_lowest()
    view = as_chosen_by(recipe, s.scored, s.prompts)
    # unanswered samples are no candidates: whatever row they keep never passes a threshold
    unanswered = view.filter(pl.col("extracted_answer").is_null())
    assert s.scored["extracted_answer"].null_count() > 0
    assert (unanswered["score"] < REFERENCE_GRID[0]).all()
    reference = reference_for(cfg, s.prompts)
    assert reference.sort("prompt_id").equals(s.reference)
    grid = grid_for(view, cfg, reference, k=cfg.k, set_name="probe")
    assert grid["set"].unique().to_list() == ["probe"]
    assert cell(choose(grid)) == (port.temperature, port.threshold)
    assert grid.select(direct.columns).equals(direct)


# ================================================================ (d) property
@settings(max_examples=40, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_prompts=st.integers(1, 12), k=st.integers(1, 10), n_temps=st.integers(1, 3))
def test_choice_matches_the_port_property(seed, n_prompts, k, n_temps):
    """Ours picks the port's cell. Ours rounds the balance to 12 decimals; the reference compares raw floats
    whose last bits follow the set order of its mean (cal_modi_acc_soft 11-17, 46), so two cells equal in
    exact arithmetic could compare unequal there. That never happens with the reference's score: rewards lie
    in [-1, 1], so a wrong sample scores at most 0.2 and a correct one at least 0.8, and some grid threshold
    between them drops every wrong sample and keeps every correct one. At a best cell no query keeps a wrong
    sample (it would lower the query's c/n while c >= 1, the official solution being correct), so each
    query's value is min(c, 8)/8, a multiple of 1/8: the sum is exact in any order and the mean is rounded
    once. Checked here: the port's best balance is the exact one, correctly rounded, and the cell is the
    same as in exact arithmetic."""
    s = synthesize(seed, n_prompts=n_prompts, k=k, n_temps=n_temps)
    grid = our_grid(s)
    port = determine_hyper(s.per_temperature, NO_CAP, shuffle_seed=seed)
    exact_best = max(ex for cells in port.cells.values() for _, _, _, ex in cells)
    exact_choice = next((t, thr) for t in s.temperatures for thr, _, _, ex in port.cells[t] if ex == exact_best)
    assert float(port.balance) == float(exact_best)
    assert (exact_best * 8 * len(s.prompts)).denominator == 1  # a mean of multiples of 1/8
    assert (port.temperature, port.threshold) == exact_choice
    assert cell(choose(grid)) == exact_choice
    assert choose(grid)["balance_score"] == round(float(exact_best), 12)


# ================================================================ (e) what remains different
def test_a_binding_cap_makes_the_reference_differ():
    """README (per-query cap): the reference grows max_samples from 1 until the deduplicated set reaches
    target_size and computes the balance on that capped set; ours has no cap in the balance. One query with
    three correct samples (reward 0.5: score 1.1) and three wrong ones (reward 1.0: score 0.2), target_size 2:
    the reference keeps the two best (both correct) at every threshold, so 2/8 * 2/2 = 0.25 everywhere and
    the first threshold; ours sees 4 correct of 7 (the official solution included) up to 0.2 and 4 of 4
    above it."""
    prompt = "# Question\n\nq\n\n# Solution\n\n"
    records = ([{"idx": 0, "prompt": prompt, "output": f"right {i}{MARK}7", "reward": [0.5]} for i in range(3)]
               + [{"idx": 0, "prompt": prompt, "output": f"wrong {i}{MARK}8", "reward": [1.0]} for i in range(3)])
    refs = [{"prompt": prompt, "response": f"official{MARK}7"}]
    scored = pl.DataFrame({
        "prompt_id": ["a"] * 6, "sample_idx": pl.Series(range(6), dtype=pl.Int32), "temperature": [0.7] * 6,
        "text": [f"right {i} Answer: 7" for i in range(3)] + [f"wrong {i} Answer: 8" for i in range(3)],
        "correct": [True] * 3 + [False] * 3, "reward": [0.5] * 3 + [1.0] * 3})
    scored = scored.with_columns(score=pl.lit(0.0), extracted_answer=extract_answer(pl.col("text")))
    prompts = pl.DataFrame({"prompt_id": ["a"], "text": ["q"], "answer": ["7"]})
    ref = pl.DataFrame({"prompt_id": ["a"], "text": ["official Answer: 7"]})
    grid = calibration_grid(reference_view(scored, prompts, "answer_match"), REFERENCE_GRID, n_star=8, k=6,
                            average_over="selected", reference=ref, reference_score=1.0, tie_lowest=True)

    capped = determine_hyper({0.7: (records, refs)}, target_size=2, exact=False)
    assert [acc for _, acc, _, _ in capped.cells[0.7]] == [0.25] * 200
    assert [n for _, _, n, _ in capped.cells[0.7]] == [2] * 200
    assert (capped.threshold, capped.balance) == (-1.0, 0.25)
    ours = choose(grid)
    assert ours["balance_score"] == 0.5 and ours["threshold"] == REFERENCE_GRID[120] == 0.2000000000000008
    assert grid["balance_score"][0] == round(4 / 8 * 4 / 7, 12)
    assert (ours["threshold"], ours["balance_score"]) != (capped.threshold, capped.balance)
    # the same data with a target_size the set never reaches: the cap does not bind, and they agree
    free = determine_hyper({0.7: (records, refs)}, target_size=NO_CAP, exact=False)
    assert (free.threshold, float(free.balance)) == (ours["threshold"], ours["balance_score"])
    np.testing.assert_allclose(grid["balance_score"].to_numpy(), [acc for _, acc, _, _ in free.cells[0.7]],
                               rtol=0, atol=1e-12)
    assert grid["n_selected"].to_list() == [n for _, _, n, _ in free.cells[0.7]]


def test_a_binding_cap_changes_a_synthesized_choice():
    """The same on a synthesized probe set (seed 5: 16 prompts, K = 14, one temperature) with target_size
    three times the number of prompts: the capped sets are smaller on most cells, and the reference picks
    another threshold than ours (and than itself without the cap), by a clear margin: no float near-tie."""
    s, grid, free = fixed(5)
    capped = determine_hyper(s.per_temperature, 3 * s.prompts.height, shuffle_seed=5, exact=False)
    (temp,) = s.temperatures
    assert all(c[2] <= f[2] for c, f in zip(capped.cells[temp], free.cells[temp], strict=True))
    assert sum(c[2] < f[2] for c, f in zip(capped.cells[temp], free.cells[temp], strict=True)) > 100
    ours = cell(choose(grid))
    assert ours == (free.temperature, free.threshold) == (temp, REFERENCE_GRID[90])
    assert (capped.temperature, capped.threshold) == (temp, REFERENCE_GRID[190]) == (1.1, 0.9000000000000014)
    values = [acc for _, acc, _, _ in capped.cells[temp]]
    assert max(values[:190]) < float(capped.balance) - 0.001  # the first best by a margin
    assert float(capped.balance) - values[90] > 0.02  # ours is well below the reference's best there
    assert choose(grid)["balance_score"] - float(capped.balance) > 0.1


def test_the_cap_counts_copies_before_dedup():
    """README (cap and dedup order): the reference caps first, then drops repeated outputs, so a capped set
    can be smaller than the cap. Two copies of the best text and one other correct text, max_samples 2: the
    reference keeps one distinct text where a dedup-then-cap would keep two."""
    prompt = "# Question\n\nq\n\n# Solution\n\n"
    records = [{"idx": 0, "prompt": prompt, "output": out, "reward": [r]}
               for out, r in [(f"x{MARK}7", 0.9), (f"x{MARK}7", 0.8), (f"y{MARK}7", 0.5)]]
    trn = process_data(records, [{"prompt": prompt, "response": f"official{MARK}7"}], random.Random(0))
    assert [u["output"] for u in get_unique_trn_json(2, trn, 0.0)] == [f"x{MARK}7"]
    assert len(get_unique_trn_json(3, trn, 0.0)) == 2


def test_prompt_without_answered_samples_counts_in_both():
    """A query none of whose samples states a final answer: the reference still appends its official
    response (metric_modiacc_auto.py 104), so the query is in the selected set with c = n = 1; so is it in
    ours. A temperature at which no sample states an answer still has a row per threshold."""
    prompt_a, prompt_b = "# Question\n\na\n\n# Solution\n\n", "# Question\n\nb\n\n# Solution\n\n"
    records = ([{"idx": 0, "prompt": prompt_a, "output": f"s{i}{MARK}7", "reward": [0.0]} for i in range(2)]
               + [{"idx": 1, "prompt": prompt_b, "output": f"t{i}", "reward": [0.0]} for i in range(2)])
    refs = [{"prompt": prompt_a, "response": f"ra{MARK}7"}, {"prompt": prompt_b, "response": f"rb{MARK}9"}]
    mute = [{**r, "output": f"u{i}"} for i, r in enumerate(records)]
    port = determine_hyper({0.7: (records, refs), 0.9: (mute, refs)}, NO_CAP, exact=False)
    # a: 3 correct of 3 -> 9/24; b: the official one only -> 1/8; mean 1/4. At 0.9: 1/8 for both
    assert [acc for _, acc, _, _ in port.cells[0.7][:1]] == [0.25]
    assert [acc for _, acc, _, _ in port.cells[0.9][:1]] == [0.125]
    assert port.cells[0.7][0][2] == 4 and port.cells[0.9][0][2] == 2

    scored = pl.DataFrame({
        "prompt_id": ["a", "a", "b", "b"] * 2, "sample_idx": pl.Series([0, 1, 0, 1] * 2, dtype=pl.Int32),
        "temperature": [0.7] * 4 + [0.9] * 4,
        "text": ["s0 Answer: 7", "s1 Answer: 7", "t0", "t1", "u0", "u1", "u2", "u3"],
        "correct": [True, True, False, False] + [False] * 4, "reward": [0.0] * 8})
    scored = scored.with_columns(score=pl.lit(0.0), extracted_answer=extract_answer(pl.col("text")))
    prompts = pl.DataFrame({"prompt_id": ["a", "b"], "text": ["a", "b"], "answer": ["7", "9"]})
    ref = pl.DataFrame({"prompt_id": ["a", "b"], "text": ["ra Answer: 7", "rb Answer: 9"]})
    grid = calibration_grid(reference_view(scored, prompts, "answer_match"), REFERENCE_GRID, n_star=8, k=2,
                            average_over="selected", reference=ref, reference_score=1.0, tie_lowest=True)
    for temp in (0.7, 0.9):
        rows = grid.filter(pl.col("temperature") == temp)
        assert rows["balance_score"].to_list() == [acc for _, acc, _, _ in port.cells[temp]]
        assert rows["n_selected"].to_list() == [n for _, _, n, _ in port.cells[temp]]
    assert cell(choose(grid)) == (port.temperature, port.threshold) == (0.7, -1.0)
