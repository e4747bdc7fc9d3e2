"""tasks/config/checks.py: recipes whose sections contradict each other or their prompts are refused
before any compute, in one line naming the fields."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tasks.config.checks import TINY_TEMPLATE_TOKENS, check_prompts, check_recipe, model_context
from tasks.config.loading import load_recipe, recipe_from_dict
from tasks.errors import ConfigError, FlywheelError, InputDataError
from tasks.preflight import preflight, prompt_rows
from tests.conftest import MICRO_RECIPE

ROOT = Path(__file__).resolve().parent.parent


def recipe(**sections):
    data = json.loads(json.dumps(MICRO_RECIPE))
    for dotted, value in sections.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return recipe_from_dict(data)


def refused(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Fix:" in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows_file(tmp_path: Path, n_seed: int = 4, text=lambda i: f"Q{i}: what is {i}+{i}?", level=None) -> Path:
    splits = ["seed"] * n_seed + ["train"] * 12 + ["probe"] * 2 + ["test"] * 4
    return write_jsonl(tmp_path / "p.jsonl", [
        {"text": text(i), "answer": str(2 * i), "split": s, "target": f"{2 * i}" if s == "seed" else None,
         **({"level": level(i)} if level else {})} for i, s in enumerate(splits)])


def file_recipe(path: Path, **more):
    return recipe(prompts__source={"type": "file", "path": str(path), "target_column": "target",
                                   **more.pop("source", {})},
                  pool__difficulty_schedule=more.pop("schedule", None), **more)


# ---------------------------------------------------------------- the recipe alone
@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_are_consistent(path):
    check_recipe(load_recipe(path))


def test_curriculum_beyond_the_arith_generator():
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(pool__difficulty_schedule=[[2, 3], [4, 5]]))
    refused(exc, "pool.difficulty_schedule", "[5]", "max_steps 4", "raise prompts.source.max_steps")


@pytest.mark.parametrize("source, made", [
    ({"type": "hub", "dataset": "openai/gsm8k", "splits": {"seed": "train", "probe": "train", "train": "train",
                                                           "test": "test"}}, "difficulty_column is not set"),
    ({"type": "mbpp", "path": "x.jsonl"}, "mbpp prompts have no difficulty"),
])
def test_curriculum_for_a_source_without_difficulties(source, made):
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(prompts__source=source))  # the micro recipe keeps the default schedule
    refused(exc, "pool.difficulty_schedule", made, "difficulty_schedule: null")


@pytest.mark.parametrize("splits, needle", [
    ({"train": "train", "test": "test", "probe": "train[:8]"}, "no seed entry"),
    ({"train": "train", "test": "test", "seed": "train[:8]"}, "no probe entry"),
])
def test_hub_splits_the_warmup_or_calibration_needs(splits, needle):
    r = recipe(prompts__source={"type": "hub", "dataset": "d", "splits": splits}, pool__difficulty_schedule=None,
               calibrate__enabled=True)
    with pytest.raises(ConfigError) as exc:
        check_recipe(r)
    refused(exc, "prompts.source.splits", needle)


def test_a_budget_the_pool_can_never_meet():
    # micro: 16 prompts per iteration x min(cap 1, k 2) = at most 16 selected examples
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(check__min_selected=17))
    refused(exc, "check.min_selected", "at most 16", "fewer than the 17", "never pass")
    check_recipe(recipe(check__min_selected=16))
    with pytest.raises(ConfigError) as exc:  # a round whose difficulties leave a smaller pool
        check_recipe(recipe(check__min_selected=81, pool__prompts_per_iteration=100, select__cap_per_prompt=8,
                            pool__difficulty_schedule=[[2]]))  # 40 two-step prompts x min(8, k 2)
    refused(exc, "round 1: 40 pool prompts", "at most 80")


def test_gate_text_bounds_that_exclude_every_sample():
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(check__min_text_chars=50, check__max_text_chars=40))
    refused(exc, "check.min_text_chars", "no sample can pass")


# ---------------------------------------------------------------- the recipe against its prompt rows
def test_a_consistent_file_recipe_passes(tmp_path):
    r = file_recipe(rows_file(tmp_path))
    check_recipe(r)
    check_prompts(r, prompt_rows(r), "p.jsonl")


@pytest.mark.parametrize("drop, needle", [("test", "no test prompts"), ("train", "no train prompts"),
                                          ("probe", "calibrate.enabled")])
def test_missing_splits_the_run_needs(tmp_path, drop, needle):
    path = rows_file(tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    write_jsonl(path, [r for r in rows if r["split"] != drop])
    r = file_recipe(path, calibrate__enabled=True)
    with pytest.raises(InputDataError) as exc:
        check_prompts(r, prompt_rows(r), str(path))
    refused(exc, needle, str(path))


def test_warmup_without_labelled_seed_rows(tmp_path):
    path = rows_file(tmp_path)
    r = recipe(prompts__source={"type": "file", "path": str(path), "extra_columns": ["target"]},
               pool__difficulty_schedule=None)
    with pytest.raises(InputDataError) as exc:
        check_prompts(r, prompt_rows(r), str(path))
    refused(exc, "warmup.enabled", "needs 1 labelled seed row", "has 0 with a target", "target_column")
    check_prompts(recipe(prompts__source={"type": "file", "path": str(path), "extra_columns": ["target"]},
                         pool__difficulty_schedule=None, warmup__enabled=False), prompt_rows(r), str(path))


def test_carve_that_leaves_too_few_seed_rows_gives_the_numbers(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": f"Q{i}: {i}+{i}?", "answer": str(2 * i), "target": "x"}
                                              for i in range(200)])
    r = file_recipe(path, source={"splits": {"test": 0.2, "probe": 8, "seed": 0.05}}, warmup__batch_size=32)
    with pytest.raises(InputDataError) as exc:
        check_prompts(r, prompt_rows(r), str(path))
    msg = refused(exc, "prompts.source.splits.seed", "needs 32 labelled seed row(s) (warmup.batch_size)",
                  "200 of 200 rows have a target", "raise splits.seed to about 0.2", "lower warmup.batch_size")
    seed = int(msg.split("the seed split has ")[1].split()[0])
    assert 0 < seed < 32
    ok = file_recipe(path, source={"splits": {"test": 0.2, "probe": 8, "seed": 0.2}}, warmup__batch_size=32)
    check_prompts(ok, prompt_rows(ok), str(path))  # the share the fix suggests is enough


def test_curriculum_asks_for_levels_the_file_lacks(tmp_path):
    path = rows_file(tmp_path, level=lambda i: f"Level {1 + i % 2}")
    r = file_recipe(path, source={"difficulty_column": "level"}, schedule=[[1], [2, 3]])
    with pytest.raises(InputDataError) as exc:
        check_prompts(r, prompt_rows(r), str(path))
    refused(exc, "pool.difficulty_schedule", "[3]", "only [1, 2]")
    check_prompts(file_recipe(path, source={"difficulty_column": "level"}, schedule=[[1], [1, 2]]),
                  prompt_rows(r), str(path))


def test_budget_against_the_real_pool(tmp_path):
    path = rows_file(tmp_path)  # 12 train prompts x min(cap 1, k 2)
    r = file_recipe(path, check__min_selected=13)
    with pytest.raises(ConfigError) as exc:
        check_prompts(r, prompt_rows(r), str(path))
    refused(exc, "check.min_selected", "round 1: 12 pool prompts", "at most 12")


def test_tiny_model_prompt_length_is_exact(tmp_path):
    ctx = MICRO_RECIPE["model"]["init"].get("max_position_embeddings", 256)
    fits, over = "x" * (ctx - TINY_TEMPLATE_TOKENS - 1), "y" * (ctx - TINY_TEMPLATE_TOKENS)
    path = rows_file(tmp_path, text=lambda i: (fits + str(i))[-(ctx - TINY_TEMPLATE_TOKENS - 1):])
    r = file_recipe(path)
    check_prompts(r, prompt_rows(r), str(path))
    path = rows_file(tmp_path, text=lambda i: over if i == 6 else f"Q{i}?")
    with pytest.raises(InputDataError) as exc:
        check_prompts(r, prompt_rows(r), str(path))
    refused(exc, f"row 7 of {path}", f"{ctx - TINY_TEMPLATE_TOKENS} characters", f"context of {ctx} tokens",
            "model.init.max_position_embeddings", "1 prompt(s) in all")


def test_tiny_template_tokens_match_the_real_tokenizer():
    from tasks.models.loading import render_prompts
    from tasks.models.tiny_model import build_char_tokenizer

    tok = build_char_tokenizer()
    text = "Mia has 3 pens. How many?"
    rendered = render_prompts(tok, [text])[0]
    assert len(tok(rendered, add_special_tokens=False)["input_ids"]) == len(text) + TINY_TEMPLATE_TOKENS


def test_vllm_max_model_len_and_pretrained_config_set_the_context(tmp_path):
    assert model_context(recipe(generate__vllm={"max_model_len": 64})) == (64, "generate.vllm.max_model_len")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 100}))
    r = recipe(model__init={"type": "pretrained", "name_or_path": str(model)})
    assert model_context(r) == (100, "model.init.name_or_path")
    assert model_context(recipe(model__init={"type": "pretrained", "name_or_path": "org/hub-model"})) is None
    path = rows_file(tmp_path, text=lambda i: "z" * 1001 if i == 0 else f"Q{i}?")
    fr = file_recipe(path, model__init={"type": "pretrained", "name_or_path": str(model)})
    with pytest.raises(InputDataError) as exc:  # 10 characters per token at most: 1001 > 10 x 100
        check_prompts(fr, prompt_rows(fr), str(path))
    refused(exc, "row 1 of", "1001 characters", "over 10 characters per context token")


def test_mbpp_rows_are_checked_too(tmp_path):
    src = {"type": "mbpp", "path": str(ROOT / "data" / "examples" / "mbpp.jsonl"), "seed_size": 0}
    r = recipe(prompts__source=src, pool__difficulty_schedule=None, verifier__type="unit_tests")
    with pytest.raises(FlywheelError) as exc:  # no seed tasks, but the warm-up is on
        preflight(r, tmp_path / "ws")
    refused(exc, "warmup.enabled", "has 0 with a target")
    preflight(recipe(prompts__source={**src, "seed_size": 5}, pool__difficulty_schedule=None,
                     verifier__type="unit_tests", model__init={**MICRO_RECIPE["model"]["init"],
                                                               "max_position_embeddings": 512}), tmp_path / "ws")


def test_mbpp_prompt_beyond_the_context_is_named_by_row(tmp_path):
    src = {"type": "mbpp", "path": str(ROOT / "data" / "examples" / "mbpp.jsonl"), "seed_size": 5}
    r = recipe(prompts__source=src, pool__difficulty_schedule=None, verifier__type="unit_tests",
               model__init={**MICRO_RECIPE["model"]["init"], "max_position_embeddings": 128})
    with pytest.raises(InputDataError) as exc:
        preflight(r, tmp_path / "ws")
    refused(exc, "mbpp.jsonl", "row ", "beyond the model's context of 128 tokens")
    assert pl.read_ndjson(ROOT / "data" / "examples" / "mbpp.jsonl").height == 18


def test_training_objective_must_match_the_select_mode():
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(train__objective="dpo"))
    refused(exc, "train.objective", "set select.mode: pairs")
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(select__mode="pairs"))
    refused(exc, "select.mode", "set train.objective: dpo")
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(select__mode="pairs", train__objective="dpo", train__mode="restart"))
    refused(exc, "train.mode", "reference model is the parent")
    check_recipe(recipe(select__mode="pairs", train__objective="dpo"))
    with pytest.raises(ConfigError) as exc:
        recipe(warmup__objective="dpo")
    refused(exc, "warmup.objective")


# ---------------------------------------------------------------- B-STaR reference-code options
def test_reference_options_refusals(tmp_path):
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(calibrate__threshold_from="full"))  # the micro recipe does not calibrate
    refused(exc, "calibrate.threshold_from", "calibrate.enabled")
    check_recipe(recipe(calibrate__enabled=True, calibrate__threshold_from="full", calibrate__inject_reference="train"))
    with pytest.raises(ConfigError) as exc:
        check_recipe(file_recipe(rows_file(tmp_path), calibrate__inject_reference="balance"))
    refused(exc, "calibrate.inject_reference", "only the arith source")
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(calibrate__inject_reference="balance", verifier__type="majority_vote"))
    refused(exc, "calibrate.inject_reference", "majority_vote")


def test_resweep_refused_in_a_workspace_whose_dvc_yaml_predates_it(tmp_path):
    import shutil
    import subprocess

    from tasks.workspace.layout import Layout

    ws = tmp_path / "ws"
    (ws / ".dvc").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / "flywheel.yaml").write_text("{}")
    (ws / "dvc.yaml").write_text("stages:\n  select:\n    outs:\n      - data/iterations/${key}/selected.parquet\n")
    assert not Layout(ws).declares(Layout(ws).threshold("0001"))
    shutil.copyfile(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    assert Layout(tmp_path).declares(Layout(tmp_path).threshold("0004"))
    assert Layout(tmp_path).declares(Layout(tmp_path).calibration_full("0004"))
    assert not Layout(tmp_path).declares(tmp_path / "data" / "iterations" / "0004" / "nothing.json")
    with pytest.raises(ConfigError) as exc:  # refused before the remote or the engine is looked at
        preflight(recipe(calibrate__enabled=True, calibrate__threshold_from="full"), ws)
    refused(exc, "calibrate.threshold_from", "flywheel init")


@pytest.mark.parametrize("sections, needles", [
    ({"hints": {"enabled": True}, "verifier__type": "majority_vote"}, ("hints.enabled", "majority_vote")),
    ({"hints": {"enabled": True}, "select__mode": "pairs", "train__objective": "dpo"}, ("hints.enabled", "pairs")),
    ({"hints": {"enabled": True, "reserve": 0.2}}, ("hints.reserve", "allocation.enabled")),
])
def test_the_hint_pass_needs_gold_and_sft_examples(sections, needles):
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(**sections))
    refused(exc, *needles)


def test_a_partial_hint_in_the_arith_grammar_needs_arith_prompts(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"text": f"What is {i}+1?", "answer": str(i + 1)} for i in range(40)])
    source = {"type": "file", "path": str(data), "splits": {"test": 0.2, "probe": 4, "seed": 0.4}}
    with pytest.raises(ConfigError) as exc:
        check_recipe(recipe(prompts__source=source, pool__difficulty_schedule=None,
                            hints={"enabled": True, "kinds": ["partial"]}))
    refused(exc, "hints.kinds", "arith")
    check_recipe(recipe(prompts__source=source, pool__difficulty_schedule=None,
                        hints={"enabled": True, "kinds": ["partial", "answer"]}))  # answer covers the rest


def test_hints_off_or_on_the_default_sources_pass():
    check_recipe(recipe(hints={"enabled": True}))
    check_recipe(recipe(hints={"enabled": False, "kinds": ["socratic"], "socratic": {"template": "{question} ?"}}))
