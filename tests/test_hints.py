"""tasks/sampling/hints.py and the hint pass of the generate stage: which prompts get a hint, the hinted
requests, and the samples table both passes write (marked, offset, reproducible; off is unchanged)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from tasks.config.allocation import HINT_IDX_BASE
from tasks.config.recipe import ScaleConfig, VerifierConfig
from tasks.config.sampling import HintsConfig
from tasks.data.arith import generate_problems, solution_chains
from tasks.data.schema import SAMPLES
from tasks.placement.shards import generate_sharded
from tasks.sampling.hints import hint_targets, partial_solutions
from tasks.seeds import derive_seed
from tasks.stages.generate import generate

QUESTION = "Mia has 23 pens. Then gets 17 more. Then loses 9. How many pens now?"


def hints(**kw) -> HintsConfig:
    return HintsConfig.model_validate({"enabled": True, **kw})


def pool(rows: list[tuple[str, str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"prompt_id": pl.String, "text": pl.String, "answer": pl.String}, orient="row")


def first_pass(correct: dict[str, list[bool]]) -> pl.DataFrame:
    return pl.DataFrame([(p, c) for p, cs in correct.items() for c in cs], schema={"prompt_id": pl.String,
                                                                               "correct": pl.Boolean}, orient="row")


# ---------------------------------------------------------------- which prompts, which kind
def test_targets_are_prompts_below_m():
    prompts = pool([("a", QUESTION, "31"), ("b", QUESTION.replace("Mia", "Tom"), "31"),
                    ("c", QUESTION.replace("Mia", "Ava"), "31")])
    fp = first_pass({"a": [False] * 3, "b": [True, False, False], "c": [True, True, True]})
    out = hint_targets(fp, prompts, hints(min_correct=2, kinds=["answer"]))
    assert out["prompt_id"].to_list() == ["a", "b"]
    assert out["c_first"].to_list() == [0, 1] and out["n_first"].to_list() == [3, 3]
    assert out["hint_reason"].to_list() == ["0 correct of 3 < m=2", "1 correct of 3 < m=2"]
    assert set(out["origin"]) == {"rationalized"}


def test_a_prompt_without_gold_takes_the_next_kind_and_one_without_any_is_left_out():
    one_step = "Tom has 5 coins. Then loses 2. How many coins now?"
    prompts = pool([("a", QUESTION, None), ("b", QUESTION.replace("Mia", "Tom"), "31"), ("c", one_step, None)])
    out = hint_targets(first_pass({"a": [False], "b": [False], "c": [False]}), prompts, hints(kinds=["answer", "partial"]))
    assert dict(zip(out["prompt_id"], out["hint_kind"])) == {"a": "partial", "b": "answer"}  # c: no gold, one step
    assert dict(zip(out["prompt_id"], out["origin"])) == {"a": "hinted", "b": "rationalized"}


def test_max_prompts_keeps_the_fewest_correct_and_a_sample_budget_cuts_too():
    prompts = pool([(p, QUESTION, "31") for p in "abcd"])
    fp = first_pass({"a": [True, False, False], "b": [False] * 3, "c": [False] * 3, "d": [True, True, False]})
    cfg = hints(min_correct=3, kinds=["answer"], max_prompts=3, k=4)
    assert hint_targets(fp, prompts, cfg)["prompt_id"].to_list() == ["a", "b", "c"]  # d has the most correct
    assert hint_targets(fp, prompts, cfg, max_samples=9)["prompt_id"].to_list() == ["b", "c"]  # 9 // 4 prompts
    assert hint_targets(fp.filter(pl.col("prompt_id") == "zz"), prompts, hints(kinds=["answer"])).height == 4


def test_templates_render_by_plain_replacement():
    q = "Ann has {3} pens {answer}. Then gets 1 more. Then loses 2. How many pens now?"
    prompts = pool([("a", q, "2"), ("b", QUESTION, "31"), ("c", QUESTION.replace("Mia", "Leo"), "31")])
    fp = first_pass({"a": [False], "b": [False], "c": [False]})
    out = hint_targets(fp, prompts, hints(kinds=["answer"], answer={"template": "Q: {question} A={answer}"}))
    assert out.filter(pl.col("prompt_id") == "a")["text"].item() == f"Q: {q} A=2"  # braces in the problem survive
    assert out.filter(pl.col("prompt_id") == "a")["hint"].item() == "Q:  A=2"
    soc = hint_targets(fp, prompts, hints(kinds=["socratic"], socratic={"template": "{question} What comes first?"}))
    assert soc.filter(pl.col("prompt_id") == "b")["text"].item() == QUESTION + " What comes first?"
    assert set(soc["hint"]) == {"What comes first?"} and set(soc["origin"]) == {"hinted"}
    in_prompt = hint_targets(fp, prompts, hints(kinds=["partial"], partial={"placement": "prompt"}))
    row = in_prompt.filter(pl.col("prompt_id") == "b").row(0, named=True)
    assert row["text"] == QUESTION + " Start: 23+17=40." and row["prefix"] is None
    prefill = hint_targets(fp, prompts, hints(kinds=["partial"]))
    row = prefill.filter(pl.col("prompt_id") == "b").row(0, named=True)
    assert row["text"] == QUESTION and row["prefix"] == " 23+17=40." == row["hint"]


@pytest.mark.parametrize("bad, match", [
    ({"answer": {"template": "The answer is {answer}."}}, "lacks {question}"),
    ({"answer": {"template": "{question}"}}, "lacks {answer}"),
    ({"partial": {"template": "{question} go"}}, "lacks {partial}"),
    ({"kinds": ["answer", "answer"]}, "twice"),
    ({"kinds": []}, "at least one"),
    ({"kinds": ["socratic"]}, "socratic.template"),
    ({"partial": {"share": 1.0}}, "less than 1"),
])
def test_the_config_refuses_templates_and_kinds_that_cannot_work(bad, match):
    with pytest.raises(ValidationError, match=match):
        hints(**bad)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("share", [0.25, 0.5, 0.99])
def test_arith_partial_matches_the_generator_target(steps, share):
    problems = pl.concat([generate_problems(20, steps, seed) for seed in (0, 1, 2)])
    got = partial_solutions(solution_chains(problems["text"]), share)
    if steps == 1:  # one step has no proper part to give away
        assert got.null_count() == got.len()
        return
    reveal = min(max(-(-int(share * 100) * steps // 100), 1), steps - 1)
    sentences = problems["target"].str.split(". ")
    want = sentences.list.head(reveal).list.join(". ") + "."
    assert got.to_list() == want.to_list()
    assert not (got.str.contains("Answer")).any()  # never the whole chain
    assert (problems["target"].str.starts_with(got)).all()


def test_partials_of_text_outside_the_grammar_are_null():
    assert partial_solutions(solution_chains(pl.Series(["What is 2+2?", None])), 0.5).to_list() == [None, None]


# ---------------------------------------------------------------- the generate stage with the pass on
RUN = dict(iteration="0001", round_index=1, temperature=0.8, seed=derive_seed(0, "0001", "generate"))
# samples.parquet that generate wrote for the micro recipe (micro_assets' prompts and untrained model, its
# generate and pool sections, RUN) before the hint pass existed (commit 19d134b): off must keep writing it
HINTS_OFF_MD5 = "08376624eba036d4275e70cac28cf9b3"
ON = dict(kinds=["partial", "answer"], k=3)


def _md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(micro_assets, tmp_path_factory):
    """Hints off, hints on, and hints on again, into separate folders."""
    recipe, prompts, model = micro_assets
    out = tmp_path_factory.mktemp("hints")
    paths = {"off": generate(model, prompts, recipe.generate, recipe.pool, out_path=out / "off.parquet", **RUN)}
    for name in ("on", "again"):
        paths[name] = generate(model, prompts, recipe.generate, recipe.pool, out_path=out / f"{name}.parquet",
                               hints=hints(**ON), verifier=VerifierConfig(), hint_seed=99, **RUN)
    return paths


def test_hint_rows_are_marked_and_offset(runs):
    df = pl.read_parquet(runs["on"])
    assert df.columns == [*SAMPLES.columns, "origin", "hint_kind", "hint"]
    first, hinted = df.filter(pl.col("origin") == "self"), df.filter(pl.col("origin") != "self")
    assert hinted.height > 0 and set(hinted["origin"]) <= {"rationalized", "hinted"}
    assert (hinted["sample_idx"] >= HINT_IDX_BASE).all() and (first["sample_idx"] < HINT_IDX_BASE).all()
    assert set(hinted["pass_name"]) == {"hint"} and set(first["pass_name"]) == {"main"}
    assert first["hint"].null_count() == first.height and hinted["hint"].null_count() == 0
    assert hinted.group_by("prompt_id").len()["len"].unique().to_list() == [3]  # hints.k each
    assert not set(hinted["seed"]) & set(first["seed"])
    partial = hinted.filter(pl.col("hint_kind") == "partial")
    assert partial.height and (partial["text"].str.starts_with(partial["hint"])).all()  # prefill: prefix + continuation
    assert (partial["n_tokens"] <= 24).all()  # generated tokens only (micro: max_new_tokens 24)


def test_only_prompts_below_m_are_hinted(runs, micro_assets):
    recipe, prompts, _ = micro_assets
    from tasks.verify.verifiers import make_verifier

    df = pl.read_parquet(runs["on"])
    first = df.filter(pl.col("origin") == "self")
    verified = make_verifier("arith_chain").verify(first, pl.read_parquet(prompts))
    solved = set(verified.filter(pl.col("correct"))["prompt_id"])
    assert not solved & set(df.filter(pl.col("origin") != "self")["prompt_id"])


def test_the_first_pass_is_the_hints_off_run(runs):
    off = pl.read_parquet(runs["off"])
    first = pl.read_parquet(runs["on"]).filter(pl.col("origin") == "self").select(off.columns)
    assert first.equals(off)


def test_hints_off_writes_the_columns_and_bytes_it_always_wrote(runs):
    assert pl.read_parquet(runs["off"]).columns == list(SAMPLES.columns)
    if HINTS_OFF_MD5 is not None:
        assert _md5(runs["off"]) == HINTS_OFF_MD5


def test_the_hint_pass_is_reproducible_and_shards_write_the_same_bytes(runs, micro_assets, tmp_path):
    assert _md5(runs["on"]) == _md5(runs["again"])
    recipe, prompts, model = micro_assets
    cfg = recipe.generate.model_copy(update={"batch_size": 4})  # shards of whole HF batches, 4 prompts each
    sharded = generate_sharded(model, prompts, cfg, recipe.pool, ScaleConfig(runner="dask", shard_size=4),
                               out_path=tmp_path / "samples.parquet", hints=hints(**ON), verifier=VerifierConfig(),
                               hint_seed=99, **RUN)
    unsharded = generate(model, prompts, cfg, recipe.pool, out_path=tmp_path / "one" / "samples.parquet",
                         hints=hints(**ON), verifier=VerifierConfig(), hint_seed=99, **RUN)
    assert _md5(sharded) == _md5(unsharded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "samples.parquet"]  # no pass files left behind


def test_with_adaptive_k_the_pass_spends_its_reserve_and_the_allocation_says_so(micro_assets, tmp_path):
    from tasks.config.allocation import AllocationConfig

    recipe, prompts, model = micro_assets
    budget = 16 * 3  # micro pool: 16 prompts
    alloc = AllocationConfig(enabled=True, budget=budget, k_min=1, k_max=8)
    on = hints(kinds=["partial", "answer"], k=2, reserve=0.25)  # 12 samples: 6 prompts at k 2
    out = generate(model, prompts, recipe.generate, recipe.pool, out_path=tmp_path / "samples.parquet", hints=on,
                   verifier=VerifierConfig(), hint_seed=99, allocation=alloc, allocation_out=tmp_path / "alloc.parquet",
                   **RUN)
    samples, plan = pl.read_parquet(out), pl.read_parquet(tmp_path / "alloc.parquet")
    hinted = samples.filter(pl.col("origin") != "self")
    assert hinted.height == 12 and hinted["prompt_id"].n_unique() == 6
    assert samples.height <= budget and plan["k"].sum() == budget - 12
    assert plan["k_hint"].sum() == 12 and plan.filter(pl.col("k_hint") > 0)["hint_kind"].null_count() == 0
    assert set(plan.filter(pl.col("k_hint") > 0)["prompt_id"]) == set(hinted["prompt_id"])
    assert plan["first_pass_correct"].null_count() == 0
