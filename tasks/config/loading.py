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
TAG_PREFIXES = ("constrained-", "literal[")  # the member of `Threads | Literal["auto"]`, say

# A recipe is read in bounded time and memory (docs/decisions/0003-recipe-ranges-and-bounded-loading.md).
MAX_RECIPE_BYTES = 1 << 20  # 1 MiB; the shipped recipes are 2-5 KiB
MAX_RECIPE_DEPTH = 32  # mappings and lists inside each other; a recipe uses at most 6
SHOWN_CHARS = 120  # the most of a value an error line quotes; longer values are described by type and size
SHOWN_KEY_CHARS = 64  # the most of a key (a part of a field's path) an error line quotes
SHOWN_MESSAGE_CHARS = 300  # the most of a validator's or the YAML parser's message an error line quotes


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


class _TooLong(Exception):
    pass


def _shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value the user wrote, as an error line shows it: its repr when that is short, else what it is and
    its size. Bounded in time and memory whatever the value (a 50 MB string, a list nested a billion items
    deep), so nothing is formatted, searched or redacted in full."""
    out: list[str] = []
    left = [limit]

    def emit(text: str) -> None:
        left[0] -= len(text)
        if left[0] < 0:
            raise _TooLong
        out.append(text)

    def walk(v: Any) -> None:
        if isinstance(v, str | bytes):
            if len(v) > limit:
                raise _TooLong
            emit(repr(v))
        elif v is None or isinstance(v, bool | float):
            emit(repr(v))
        elif isinstance(v, int):
            if v.bit_length() > 4 * limit:
                raise _TooLong
            emit(repr(v))
        elif isinstance(v, list | tuple):
            emit("[")
            for i, x in enumerate(v):
                emit(", " if i else "")
                walk(x)
            emit("]")
        elif isinstance(v, dict):
            emit("{")
            for i, (k, x) in enumerate(v.items()):
                emit(", " if i else "")
                walk(k)
                emit(": ")
                walk(x)
            emit("}")
        else:
            emit(f"a {type(v).__name__}")

    try:
        walk(value)
        return "".join(out)
    except _TooLong:
        pass
    if isinstance(value, str | bytes):
        return f"a {type(value).__name__} of {len(value):,} characters"
    if isinstance(value, int):
        return f"an int of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, list | tuple | dict):
        return f"a {type(value).__name__} of {len(value):,} items"
    return f"a {type(value).__name__}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _explain(err: dict, source: str) -> ConfigError:
    from tasks.workspace.secrets import redact

    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p in UNION_TAGS or p.startswith(TAG_PREFIXES))))
    # a key the user wrote may be in `loc`: each part is cut short before it is formatted
    field = redact(".".join(_clip(str(p), SHOWN_KEY_CHARS) for p in loc)) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _known_fields(Recipe, tuple(err["loc"])) if len(key) <= SHOWN_KEY_CHARS else []
        close = difflib.get_close_matches(key, known, n=1)
        fix = f"did you mean '{close[0]}'?" if close else "remove it; see configs/tiny-arith.yaml for the valid keys."
        return ConfigError("unknown key.", file=source, field=field, fix=fix)
    got = err.get("input")
    got_text = f" (got {redact(_shown(got))})" if not isinstance(got, dict) else ""
    # a validator's message may quote the value: cut short, then masked
    msg = redact(_clip(err["msg"].rstrip(".").removeprefix("Value error, "), SHOWN_MESSAGE_CHARS))
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


class _Refused(Exception):
    """A recipe the loader will not read: (message, line or None, fix)."""


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where it is installed


class _RecipeLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """yaml's safe loader, refusing a mapping that repeats a key (yaml keeps the last one without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a complex key: the base class refuses unhashable ones
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            try:
                seen = first.setdefault(key, line)
            except TypeError:
                continue
            if seen != line:
                raise _Refused(f"the key {_shown(key, SHOWN_KEY_CHARS)} appears twice in one mapping, at lines "
                               f"{seen} and {line}; yaml would keep the second silently.", line,
                               "keep one of them (merge the two sections into one).")
        return super().construct_mapping(node, deep=deep)

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        try:
            return self.construct_yaml_int(node)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise _Refused(f"a number of {len(node.value):,} digits.", node.start_mark.line + 1,
                           "write numbers with at most a few dozen digits.") from None


_RecipeLoader.add_constructor("tag:yaml.org,2002:int", _RecipeLoader.construct_bounded_int)


def _check_events(text: str) -> None:
    """Refuse aliases and deep nesting before anything is built: one pass over the parser's events, linear in
    the text. An alias is how a few hundred bytes of YAML expand to billions of values."""
    loader = _BaseLoader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1 if event.start_mark else None
            if isinstance(event, yaml.AliasEvent):
                raise _Refused(f"a YAML alias (*{_clip(str(event.anchor), SHOWN_KEY_CHARS)}); recipes do not "
                               "expand anchors and aliases.", line, "write the value out in full where the alias is.")
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_RECIPE_DEPTH:
                    raise _Refused(f"values nested more than {MAX_RECIPE_DEPTH} levels deep.", line,
                                   "flatten the value; a recipe is a few levels of sections.")
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def parse_recipe_text(text: str, source: str) -> Any:
    """The data of a recipe's YAML text, read in time and memory linear in its length: aliases, nesting
    deeper than MAX_RECIPE_DEPTH and repeated keys refused, each in one line naming the line."""
    from tasks.workspace.secrets import redact

    try:
        _check_events(text)
        loader = _RecipeLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        message, line, fix = exc.args
        raise ConfigError(message, file=source, field=f"line {line}" if line else None, fix=fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        problem = redact(_clip(str(getattr(exc, "problem", None) or exc), SHOWN_MESSAGE_CHARS))
        raise ConfigError(f"invalid YAML ({problem}).", file=source, field=where,
                          fix="fix the YAML syntax.") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"a value cannot be read ({type(exc).__name__}: "
                          f"{redact(_clip(str(exc), SHOWN_MESSAGE_CHARS))}).", file=source,
                          fix="write numbers with at most a few dozen digits.") from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found.", file=str(path), fix="pass an existing recipe, e.g. configs/tiny-arith.yaml.")
    def too_big(size: int) -> ConfigError:
        return ConfigError(f"the file is {size / 2**20:.1f} MiB; a recipe may be at most "
                           f"{MAX_RECIPE_BYTES / 2**20:g} MiB.", file=str(path),
                           fix="a recipe is a few KiB of settings; keep data in prompt files.")

    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise too_big(path.stat().st_size)
    with path.open("rb") as f:
        raw = f.read(MAX_RECIPE_BYTES + 1)  # the file may have grown since stat
    if len(raw) > MAX_RECIPE_BYTES:
        raise too_big(max(len(raw), path.stat().st_size))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not valid UTF-8 text.", file=str(path), fix="save the recipe as UTF-8.") from None
    return recipe_from_dict(parse_recipe_text(text, str(path)), str(path))


def recipe_to_yaml(recipe: Recipe) -> str:
    """Deterministic YAML of the fully resolved recipe (defaults included)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=True)


def write_recipe(recipe: Recipe, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_to_yaml(recipe), encoding="utf-8")
