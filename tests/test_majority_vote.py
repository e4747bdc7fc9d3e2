"""tasks/verify/majority_vote.py: label-free pseudo-labels by majority vote, and the label-noise monitor."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.config.recipe import VerifierConfig, VoteConfig
from tasks.stages.score import score_table
from tasks.verify.majority_vote import MajorityVoteVerifier, pseudo_label_metrics
from tasks.verify.verifiers import make_verifier


def table(per_prompt: dict[str, list[str]], gold: dict[str, str | None] | None = None):
    rows = [(p, i, t) for p, texts in per_prompt.items() for i, t in enumerate(texts)]
    samples = pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String},
                           orient="row")
    ids = list(per_prompt)
    prompts = pl.DataFrame({"prompt_id": ids, "text": [f"question {p}" for p in ids],
                            "answer": [(gold or {}).get(p) for p in ids]}, schema_overrides={"answer": pl.String})
    return samples, prompts


def verdicts(per_prompt, min_agreement=0.5, extractor="number", gold=None) -> dict[str, list[bool]]:
    samples, prompts = table(per_prompt, gold)
    out = MajorityVoteVerifier(VoteConfig(min_agreement=min_agreement, extractor=extractor)).verify(samples, prompts)
    assert out.select("prompt_id", "sample_idx").equals(samples.select("prompt_id", "sample_idx"))  # row order kept
    return {p: out.filter(pl.col("prompt_id") == p)["correct"].to_list() for p in per_prompt}


def test_samples_agreeing_with_the_majority_are_correct():
    got = verdicts({"a": ["Answer: 5", "Answer: 7", "Answer: 5", "Answer: 5.0", "no answer"]})
    assert got == {"a": [True, False, True, True, False]}  # "5.0" is the number 5


def test_below_min_agreement_the_prompt_gets_no_label():
    texts = ["Answer: 1", "Answer: 1", "Answer: 2", "Answer: 3"]  # the winner holds 2 of 4 votes
    assert verdicts({"a": texts}, min_agreement=0.5) == {"a": [True, True, False, False]}
    assert verdicts({"a": texts}, min_agreement=0.51) == {"a": [False] * 4}
    assert verdicts({"a": ["Answer: 1", "Answer: 2", "x"] * 3 + ["x"]}, min_agreement=0.3) == \
        {"a": [True, False, False] * 3 + [False]}  # 3/10 reaches 0.3 despite float rounding


def test_ties_go_to_the_answer_seen_first_whatever_the_row_order():
    texts = ["Answer: 9", "Answer: 4", "Answer: 4", "Answer: 9"]
    assert verdicts({"a": texts}, min_agreement=0.0) == {"a": [True, False, False, True]}
    samples, prompts = table({"a": texts})
    shuffled = samples.reverse()
    out = MajorityVoteVerifier(VoteConfig(min_agreement=0.0)).verify(shuffled, prompts)
    # 9 holds sample 0, so it wins however the rows are ordered
    assert out.sort("sample_idx")["correct"].to_list() == [True, False, False, True]


def test_gold_is_never_read():
    texts = {"a": ["Answer: 5", "Answer: 5", "Answer: 6"], "b": ["Answer: 2", "Answer: 2", "Answer: 2"]}
    wrong_gold = verdicts(texts, gold={"a": "6", "b": "3"})
    no_gold = verdicts(texts)
    assert wrong_gold == no_gold == {"a": [True, True, False], "b": [True, True, True]}


def test_prompts_vote_apart_and_passes_vote_apart():
    samples = pl.DataFrame({"prompt_id": ["a"] * 4 + ["b"] * 2, "sample_idx": [0, 1, 0, 1, 0, 1],
                            "text": ["Answer: 1", "Answer: 1", "Answer: 2", "Answer: 2", "Answer: 2", "Answer: 3"],
                            "temperature": [0.5, 0.5, 1.0, 1.0, 0.5, 0.5]},
                           schema_overrides={"sample_idx": pl.Int32})
    prompts = pl.DataFrame({"prompt_id": ["a", "b"], "text": ["qa", "qb"], "answer": [None, None]},
                           schema_overrides={"answer": pl.String})
    out = MajorityVoteVerifier(VoteConfig(min_agreement=0.5)).verify(samples, prompts)
    assert out["correct"].to_list() == [True, True, True, True, True, False]


def test_math_extractor_groups_equivalent_answers():
    texts = ["so \\boxed{\\frac{1}{2}}", "The final answer is $0.5$", "\\boxed{3}", "Answer: 1/2"]
    got = verdicts({"a": texts}, min_agreement=0.5, extractor="math_verify")
    assert got == {"a": [True, True, False, True]}


def test_score_stage_with_majority_vote_and_evaluation_uses_gold():
    cfg = VerifierConfig(type="majority_vote", vote=VoteConfig(min_agreement=0.6))
    assert isinstance(make_verifier(cfg.type, cfg), MajorityVoteVerifier)
    samples, prompts = table({"a": ["Answer: 4", "Answer: 4", "Answer: 8"]}, gold={"a": "8"})
    scored = score_table(samples, prompts, cfg)
    assert scored["correct"].to_list() == [True, True, False]
    assert scored["score"].to_list() == [1.0, 1.0, 0.0]
    assert cfg.for_evaluation().type == "arith_chain"
    assert VerifierConfig(type="math_verify").for_evaluation().type == "math_verify"


def test_pseudo_label_metrics_report_accuracy_against_gold_only_as_a_monitor():
    per_prompt = {"a": ["Answer: 5", "Answer: 5", "Answer: 6"],   # vote 5, gold 5: right
                  "b": ["Answer: 2", "Answer: 2", "Answer: 3"],   # vote 2, gold 3: wrong
                  "c": ["Answer: 1", "Answer: 2", "Answer: 3"],   # no label
                  "d": ["Answer: 7", "Answer: 7", "Answer: 7"]}   # label, but no gold
    samples, prompts = table(per_prompt, gold={"a": "5", "b": "3", "c": "1"})
    cfg = VoteConfig(min_agreement=0.5)
    scored = MajorityVoteVerifier(cfg).verify(samples, prompts)
    m = pseudo_label_metrics(scored, prompts, cfg)
    assert m["n_pseudo_labels"] == 3
    assert m["pseudo_label_coverage"] == 0.75
    assert m["pseudo_label_agreement"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3, abs=1e-6)
    assert m["n_pseudo_labels_with_gold"] == 2
    assert m["pseudo_label_accuracy"] == 0.5
    no_gold = prompts.with_columns(answer=pl.lit(None, pl.String))
    assert pseudo_label_metrics(scored, no_gold, cfg)["pseudo_label_accuracy"] is None


def test_check_stage_reports_how_pseudo_label_accuracy_moved_since_the_first_iteration():
    from tasks.config.recipe import Recipe
    from tasks.stages.check import vote_monitor

    recipe = Recipe(verifier=VerifierConfig(type="majority_vote"))
    first_s, prompts = table({"a": ["Answer: 1", "Answer: 1", "Answer: 2"], "b": ["Answer: 4", "Answer: 4"]},
                             gold={"a": "2", "b": "4"})
    now_s, _ = table({"a": ["Answer: 2", "Answer: 2", "Answer: 1"], "b": ["Answer: 4", "Answer: 4"]})
    score = MajorityVoteVerifier(recipe.verifier.vote).verify
    m = vote_monitor(score(now_s, prompts), score(first_s, prompts), prompts, recipe)
    assert (m["pseudo_label_accuracy"], m["pseudo_label_accuracy_change"]) == (1.0, 0.5)
