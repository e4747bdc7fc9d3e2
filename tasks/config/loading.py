"""Load, validate and write recipes; turn validation failures into one-line errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tasks.config.recipe import Recipe
from tasks.errors import ConfigError


# pydantic puts the tag of a tagged union's member, or the type of a plain union's member, in `loc`
UNION_TAGS = {"arith", "file", "hub", "mbpp", "tiny_llama", "pretrained", "str", "int", "float", "bool"}


def _known_fields(model: type, loc: tuple) -> list[str]:
    """Field names valid at `loc`'s parent, for 'did you mean' hints.

    `loc` is pydantic's, so a tagged union (prompts.source, model.init) is followed by its tag."""
    current: Any = model
    for part in loc[:-1]:
        if not hasattr(current, "model_fields"):  # a tagged union: `part` names the member
            members = getattr(current, "__args__", ())
            current = next((m for m in members if "type" in getattr(m, "model_fields", {})
                            and m.model_fields["type"].default == part), None)
            continue
        if part not in current.model_fields:
            return []
        current = current.model_fields[part].annotation
    return list(getattr(current, "model_fields", {}))


def _explain(err: dict, source: str) -> ConfigError:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in UNION_TAGS))
    field = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_fields(Recipe, tuple(err["loc"])), n=1)
        fix = f"did you mean '{close[0]}'?" if close else "remove it; see configs/tiny-arith.yaml for the valid keys."
        return ConfigError("unknown key.", file=source, field=field, fix=fix)
    from tasks.workspace.secrets import redact

    got = err.get("input")
    got_text = f" (got {redact(repr(got))})" if not isinstance(got, dict) else ""
    msg = err["msg"].rstrip(".").removeprefix("Value error, ")
    return ConfigError(f"{msg}{got_text}.", file=source, field=field,
                       fix=f"set {field} to a valid value.")


def recipe_from_dict(data: Any, source: str = "<recipe>") -> Recipe:
    if data is None:
        raise ConfigError("the file is empty.", file=source, fix="start from configs/tiny-arith.yaml.")
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections.", file=source,
                          fix="start from configs/tiny-arith.yaml.")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc.errors()[0], source) from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found.", file=str(path), fix="pass an existing recipe, e.g. configs/tiny-arith.yaml.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not valid UTF-8 text.", file=str(path), fix="save the recipe as UTF-8.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        raise ConfigError(f"invalid YAML ({getattr(exc, 'problem', exc)}).", file=str(path), field=where,
                          fix="fix the YAML syntax.") from None
    return recipe_from_dict(data, str(path))


def recipe_to_yaml(recipe: Recipe) -> str:
    """Deterministic YAML of the fully resolved recipe (defaults included)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=True)


def write_recipe(recipe: Recipe, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_to_yaml(recipe), encoding="utf-8")
