"""tasks/config/ranges.py: every numeric field of the recipe has bounds, every float is finite, sections
holding the same kind of value share its range, and the values once accepted by one twin are refused."""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import annotated_types as at
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from tasks.config.loading import load_recipe, recipe_from_dict
from tasks.config.recipe import Recipe
from tasks.errors import ConfigError
from tests.conftest import MICRO_RECIPE

ROOT = Path(__file__).resolve().parents[3]

# Numeric fields left without bounds on purpose, each with the reason. Empty: every one has a range.
UNBOUNDED_ON_PURPOSE: dict[str, str] = {}

BOUNDS = (at.Ge, at.Gt, at.Le, at.Lt, at.Interval)


def _has_bounds(metadata: typing.Iterable) -> bool:
    for m in metadata:
        if isinstance(m, BOUNDS) or (isinstance(m, FieldInfo) and _has_bounds(m.metadata)):
            return True
    return False


def _numeric_leaves(tp, bounded: bool) -> Iterator[tuple[type, bool]]:
    """(int or float, whether a bound applies to it) for each number a value of type `tp` may hold."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        yield from _numeric_leaves(base, bounded or _has_bounds(meta))
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            yield from _numeric_leaves(arg, bounded)
    elif origin in (list, tuple, set, frozenset, dict):
        for arg in typing.get_args(tp):  # a bound on the container is not one on its items
            yield from _numeric_leaves(arg, False)
    elif tp in (int, float):
        yield tp, bounded


def _models(tp) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in typing.get_args(tp):
        if typing.get_origin(tp) is not typing.Literal:
            yield from _models(arg)


def numeric_fields(model: type[BaseModel] = Recipe, prefix: str = "") -> Iterator[tuple[str, FieldInfo, list]]:
    """(dotted name, field, its numeric leaves) for every numeric field of the recipe, every section and
    every member of a tagged union walked."""
    for name, field in model.model_fields.items():
        for sub in dict.fromkeys(_models(field.annotation)):
            yield from numeric_fields(sub, f"{prefix}{name}.")
        leaves = list(_numeric_leaves(field.annotation, _has_bounds(field.metadata)))
        if leaves:
            yield f"{prefix}{name}", field, leaves


FIELDS = list(numeric_fields())


def test_the_walk_reaches_every_section():
    names = {name for name, _, _ in FIELDS}
    assert len(FIELDS) > 100
    assert {"warmup.learning_rate", "warmup.max_steps", "train.learning_rate", "calibrate.temperatures",
            "calibrate.thresholds", "select.threshold", "evaluate.temperature", "generate.temperature",
            "prompts.source.seed_mix", "prompts.source.splits", "dispatch.train.timeout_s",
            "numerics.threads", "allocation.p_floor", "hints.partial.share", "train.lora.dropout"} <= names


def test_every_numeric_field_has_bounds_or_a_reason():
    unbounded = [name for name, _, leaves in FIELDS if not all(b for _, b in leaves)]
    assert sorted(set(unbounded) - set(UNBOUNDED_ON_PURPOSE)) == [], \
        "give these a type from tasks/config/ranges.py, or list them in UNBOUNDED_ON_PURPOSE with the reason"
    assert all(reason.strip() for reason in UNBOUNDED_ON_PURPOSE.values())
    assert set(UNBOUNDED_ON_PURPOSE) <= set(unbounded), "a field listed as unbounded has bounds now"


def test_every_numeric_field_says_what_it_is():
    assert [name for name, field, _ in FIELDS if not field.description] == []


def _shaped(tp, value):
    """An input of type `tp`'s shape holding `value` where a float goes."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _shaped(typing.get_args(tp)[0], value)
    if origin in (typing.Union, types.UnionType):
        return next(_shaped(a, value) for a in typing.get_args(tp) if any(t is float for t, _ in _numeric_leaves(a, False)))
    if origin is list:
        return [_shaped(typing.get_args(tp)[0], value)]
    if origin is dict:
        return {"seed": _shaped(typing.get_args(tp)[1], value)}
    return value


@pytest.mark.parametrize("name, field", [(n, f) for n, f, leaves in FIELDS if any(t is float for t, _ in leaves)],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_float_is_finite(name, field):
    adapter = TypeAdapter(typing.Annotated[field.annotation, field])
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValidationError):
            adapter.validate_python(_shaped(field.annotation, value))


def test_twin_sections_share_their_ranges():
    by_name = {name: field for name, field, _ in FIELDS}

    def bounds(name: str) -> set:
        return {repr(m) for m in by_name[name].metadata if isinstance(m, (*BOUNDS, at.Interval))}

    assert bounds("warmup.learning_rate") == bounds("train.learning_rate") == bounds("reward.learning_rate")
    assert bounds("warmup.max_steps") == bounds("train.max_steps") == bounds("reward.train_steps")
    assert bounds("warmup.dpo.beta") == bounds("train.dpo.beta")
    assert bounds("generate.temperature") == bounds("reward.judge.temperature")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_stay_valid(path):
    load_recipe(path)


def test_the_suites_micro_recipe_stays_valid():
    recipe_from_dict(json.loads(json.dumps(MICRO_RECIPE)))


# the values issue 28 found accepted, and their twins
REFUSED = [
    ("warmup:\n  learning_rate: -0.002\n", "warmup.learning_rate", "greater than 0"),
    ("warmup:\n  max_steps: 0\n", "warmup.max_steps", "greater than or equal to 1"),
    ("warmup:\n  max_steps: -5\n", "warmup.max_steps", "greater than or equal to 1"),
    ("warmup:\n  learning_rate: .nan\n", "warmup.learning_rate", "finite"),
    ("calibrate:\n  enabled: true\n  temperatures: []\n", "calibrate.temperatures", "at least 1 item"),
    ("calibrate:\n  enabled: true\n  temperatures: [0.7, -0.5]\n", "calibrate.temperatures.1", "-0.5"),
    ("calibrate:\n  enabled: true\n  thresholds: []\n", "calibrate.thresholds", "at least 1 item"),
    ("calibrate:\n  thresholds: [0.0, .inf]\n", "calibrate.thresholds.1", "finite"),
    ("calibrate:\n  reference_score: .nan\n", "calibrate.reference_score", "finite"),
    ("select:\n  threshold: .nan\n", "select.threshold", "finite"),
    ("evaluate:\n  temperature: .inf\n", "evaluate.temperature", "finite"),
    ("generate:\n  temperature: .inf\n", "generate.temperature", "finite"),
    ("generate:\n  temperature: -0.1\n", "generate.temperature", "greater than or equal to 0"),
    ("train:\n  learning_rate: .nan\n", "train.learning_rate", "finite"),
    ("train:\n  weight_decay: .inf\n", "train.weight_decay", "finite"),
    ("reward:\n  weight: .inf\n", "reward.weight", "finite"),
    ("select:\n  pairs:\n    min_margin: -.inf\n", "select.pairs.min_margin", "finite"),
    ("allocation:\n  prior_strength: .inf\n", "allocation.prior_strength", "finite"),
    ("dispatch:\n  train:\n    timeout_s: .inf\n", "dispatch.train.timeout_s", "finite"),
    ("numerics:\n  threads: 0\n", "numerics.threads", "greater than or equal to 1"),
    ("pool:\n  difficulty_schedule: [[2, -1]]\n", "pool.difficulty_schedule.0.1", "greater than or equal to 0"),
    ("prompts:\n  source:\n    type: arith\n    seed_mix: [.nan, 1.0]\n", "prompts.source.seed_mix", "sum to 1"),
    ("prompts:\n  source:\n    type: file\n    path: p.jsonl\n    splits: {test: .nan}\n",
     "prompts.source.splits", "neither a share"),
]


@pytest.mark.parametrize("text, field, needle", REFUSED, ids=[f for _, f, _ in REFUSED])
def test_out_of_range_values_are_refused_in_one_line(tmp_path, text, field, needle):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {field}: "), msg
    assert needle in msg, msg
    assert f"Fix: set {field} to a valid value." in msg
