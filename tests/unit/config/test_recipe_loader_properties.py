"""Property tests of the recipe loader: any mutation of the shipped recipe, and any bytes given as a
recipe file, either load or are refused with the project's own one-line error, quickly."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.config.checks import check_recipe
from tasks.config.loading import load_recipe, recipe_from_dict
from tasks.errors import FlywheelError
from tests.conftest import ROOT

SHIPPED = yaml.safe_load((ROOT / "configs" / "tiny-arith.yaml").read_text())
BUDGET_S = 2.0  # one load, validation and cross-section checks included

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


def _paths(node, prefix=()):
    """Every (path) to a value in the nested recipe."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


PATHS = list(_paths(SHIPPED))


@st.composite
def mutated(draw):
    recipe = copy.deepcopy(SHIPPED)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = recipe
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
            if parent is None:
                break
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
    return recipe


def _one_line_or_loads(load) -> None:
    start = time.monotonic()
    try:
        recipe = load()
        check_recipe(recipe)
    except FlywheelError as err:
        text = str(err)
        assert text and "\n" not in text and len(text) < 2000, text
    assert time.monotonic() - start < BUDGET_S


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_mutation_of_the_shipped_recipe_loads_or_is_refused_in_one_line(recipe):
    _one_line_or_loads(lambda: recipe_from_dict(recipe, "mutated.yaml"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_any_bytes_as_a_recipe_file_load_or_are_refused_in_one_line(tmp_path, data):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(data)
    _one_line_or_loads(lambda: load_recipe(path))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(mutated())
def test_mutated_recipes_written_as_yaml_load_or_are_refused_in_one_line(tmp_path, recipe):
    path = tmp_path / "recipe.yaml"
    try:
        path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    except (yaml.YAMLError, ValueError):
        pytest.skip("not representable as YAML")
    _one_line_or_loads(lambda: load_recipe(path))


def test_a_non_finite_number_is_never_accepted_where_the_shipped_recipe_has_a_number():
    """The strongest single mutation: every numeric field of the shipped recipe, set to NaN or infinity."""
    numeric = [p for p in PATHS if isinstance(_get(SHIPPED, p), (int, float)) and not isinstance(_get(SHIPPED, p), bool)]
    assert len(numeric) > 20
    for path in numeric:
        for bad in (math.nan, math.inf, -math.inf):
            recipe = copy.deepcopy(SHIPPED)
            _set(recipe, path, bad)
            with pytest.raises(FlywheelError) as err:
                recipe_from_dict(recipe, "bad.yaml")
            assert ".".join(map(str, path)) in str(err.value) or path[-1] in str(err.value)


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _set(node, path, value):
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def test_the_shipped_recipe_itself_loads():
    check_recipe(load_recipe(Path(ROOT / "configs" / "tiny-arith.yaml")))
