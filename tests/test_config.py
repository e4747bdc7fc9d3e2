"""tasks/config/loading.py + tasks/config/recipe.py: loading, validating and writing recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tasks.config.loading import load_recipe, recipe_from_dict, recipe_to_yaml, write_recipe
from tasks.config.recipe import ArithSource, FileSource, PretrainedInit, Recipe, TinyLlamaInit
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "configs" / "tiny-arith.yaml"


def recipe_file(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert "Fix:" in msg
    return msg


def test_default_recipe_loads():
    recipe = load_recipe(DEFAULT)
    assert recipe.run.name == "tiny-arith"
    assert isinstance(recipe.prompts.source, ArithSource)
    src = recipe.prompts.source
    assert len(src.seed_mix) == src.max_steps and src.seed_mix[-1] > 0  # some longest-chain seeds
    # the embedded default runs B-STaR: a real continuous reward and per-iteration calibration
    assert recipe.reward.source == "train" and recipe.calibrate.enabled
    assert isinstance(recipe.model.init, TinyLlamaInit)
    assert recipe.generate.k == 8
    assert recipe.generate.batch_size == 100
    assert recipe.verifier.type == "arith_chain"
    assert recipe.select.dedup == "exact"


def test_empty_mapping_gives_all_defaults():
    assert recipe_from_dict({}) == Recipe()


def test_recipe_is_frozen():
    recipe = Recipe()
    with pytest.raises(ValidationError):
        recipe.generate.k = 3  # type: ignore[misc]


@pytest.mark.parametrize("text, field, hint", [
    ("generate:\n  kk: 4\n", "generate.kk", "did you mean 'k'?"),
    ("generate:\n  temprature: 0.5\n", "generate.temprature", "did you mean 'temperature'?"),
    ("genrate:\n  k: 4\n", "genrate", "did you mean 'generate'?"),
    ("prompts:\n  source:\n    type: arith\n    seed_sze: 10\n", "prompts.source.seed_sze",
     "did you mean 'seed_size'?"),
    ("prompts:\n  source:\n    type: file\n    path: p.jsonl\n    text_colum: q\n", "prompts.source.text_colum",
     "did you mean 'text_column'?"),
    ("model:\n  init:\n    type: pretrained\n    name_or_path: gpt2\n    revison: main\n", "model.init.revison",
     "did you mean 'revision'?"),
    ("select:\n  zzzzzz: 1\n", "select.zzzzzz", "remove it"),
])
def test_unknown_key(tmp_path, text, field, hint):
    path = recipe_file(tmp_path, text)
    msg = config_error(path)
    assert f"{path}: {field}: unknown key." in msg
    assert hint in msg


@pytest.mark.parametrize("text, field, needle", [
    ("generate:\n  k: -1\n", "generate.k", "-1"),
    ("generate:\n  k: 0\n", "generate.k", "greater than or equal to 1"),
    ("generate:\n  k: many\n", "generate.k", "'many'"),
    ("generate:\n  backend: tpu\n", "generate.backend", "'tpu'"),
    ("train:\n  learning_rate: [1]\n", "train.learning_rate", "[1]"),
    ("prompts:\n  source:\n    type: arith\n    seed_mix: [0.5, 0.4]\n", "prompts.source.seed_mix", "sum to 1"),
    ("prompts:\n  source:\n    type: arith\n    seed_mix: [1.5, -0.5]\n", "prompts.source.seed_mix", "non-negative"),
    ("prompts:\n  source:\n    type: nope\n", "prompts.source", "nope"),
    ("run:\n  name: ../evil\n", "run.name", "../evil"),
    ("model:\n  init:\n    type: tiny_llama\n    num_heads: 3\n    num_kv_heads: 2\n", "model.init",
     "multiple of num_kv_heads"),
    ("generate: 5\n", "generate", "5"),
])
def test_invalid_values(tmp_path, text, field, needle):
    path = recipe_file(tmp_path, text)
    msg = config_error(path)
    assert f"{path}: {field}: " in msg
    assert needle in msg
    assert f"set {field} to a valid value" in msg


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path, text):
    msg = config_error(recipe_file(tmp_path, text))
    assert "empty" in msg


def test_invalid_yaml_names_the_line(tmp_path):
    path = recipe_file(tmp_path, "run:\n  name: x\ngenerate: [k: 1\n")
    msg = config_error(path)
    assert "invalid YAML" in msg
    assert "line 3" in msg or "line 4" in msg


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_top_level(tmp_path, text):
    msg = config_error(recipe_file(tmp_path, text))
    assert "top level must be a mapping" in msg


def test_non_utf8_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes("run:\n  name: caf\u00e9\n".encode("latin-1"))
    assert "UTF-8" in config_error(path)


def test_missing_file(tmp_path):
    msg = config_error(tmp_path / "nope.yaml")
    assert "file not found" in msg


def test_recipe_from_dict_source_name():
    with pytest.raises(ConfigError) as exc:
        recipe_from_dict({"generate": {"k": -2}})
    assert str(exc.value).startswith("<recipe>: generate.k: ")


@pytest.mark.parametrize("recipe", [
    Recipe(),
    recipe_from_dict(yaml.safe_load(DEFAULT.read_text())),
    Recipe.model_validate({
        "run": {"name": "custom", "seed": 5, "iterations": 1},
        "prompts": {"source": {"type": "file", "path": "data/p.jsonl", "answer_column": None,
                               "difficulty_column": "level"}},
        "model": {"init": {"type": "pretrained", "name_or_path": "org/model", "revision": "abc", "dtype": "float32"}},
        "pool": {"prompts_per_iteration": None, "difficulty_schedule": None},
        "calibrate": {"enabled": True, "temperatures": [0.7], "thresholds": [0.0, 0.5]},
        "select": {"dedup": "equations", "cap_per_prompt": 3, "threshold": -0.25},
        "remote": {"url": "s3://bucket/x"},
    }),
])
def test_yaml_round_trip(recipe, tmp_path):
    text = recipe_to_yaml(recipe)
    again = recipe_from_dict(yaml.safe_load(text))
    assert again == recipe
    assert recipe_to_yaml(again) == text  # deterministic
    path = tmp_path / "sub" / "flywheel.yaml"
    write_recipe(recipe, path)
    assert load_recipe(path) == recipe


def test_round_trip_keeps_union_members():
    recipe = Recipe.model_validate({"prompts": {"source": {"type": "file", "path": "p.parquet"}},
                                    "model": {"init": {"type": "pretrained", "name_or_path": "x"}}})
    again = recipe_from_dict(yaml.safe_load(recipe_to_yaml(recipe)))
    assert isinstance(again.prompts.source, FileSource)
    assert isinstance(again.model.init, PretrainedInit)
    assert again.prompts.source.path == "p.parquet"


def test_yaml_contains_resolved_defaults():
    data = yaml.safe_load(recipe_to_yaml(recipe_from_dict({"generate": {"k": 3}})))
    assert data["generate"]["k"] == 3
    assert data["generate"]["top_p"] == 1.0  # a default not in the input
    assert set(data) == set(Recipe.model_fields)
