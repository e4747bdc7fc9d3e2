"""Plain data from the sandbox: the trusted side's strict, bounded decoder of the runner's tagged JSON.

JSON's null, booleans, strings, finite numbers and arrays stand for themselves (an array is a
list); anything else is an object with exactly one tag: {"tuple": [...]}, {"set": [...]},
{"frozenset": [...]}, {"dict": [[key, value], ...]}, {"deque": [...]}, {"bytes": "<hex>"},
{"complex": [re, im]}, {"int": "<hex>"} (beyond 64 bits), {"float": "nan" | "inf" | "-inf"},
{"fraction": [numerator, denominator]}, {"decimal": "<text>"}, {"range": [start, stop, step]}, and
{"opaque": "<type>"} for a value that is not plain data. The encoder is `encode` in
tasks/verify/sandbox/child.py.

Decoded values are built here from builtin types only, so comparing them runs no code of the
sample: an object whose `__eq__` always answers True arrives as Opaque, which equals nothing.

Bounded work whatever the sample sends: a reply is at most MAX_REPLY_BYTES, nested at most
MAX_DEPTH deep and holds at most MAX_NODES values. Nothing the sample sends is ever hashed here:
sets and dicts decode into WireSet and WireDict, which keep their members in the order they came and
compare, look up and deduplicate through `canon`, a total order on plain values (sorting costs
O(n log n) comparisons whatever the values' hashes are; a set of integers that all hash alike costs
the same as any other). Every failure to decode is a WireError, the verifier's own error.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import reprlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

MAX_REPLY_BYTES = 8 * 1024 * 1024  # one reply line; a sample's value larger than this is an error
MAX_DEPTH = 200
MAX_NODES = 1_000_000  # values in one reply (every list item, dict key and value counts)
MAX_INT_HEX = MAX_REPLY_BYTES  # the checks refuse integers past 100,000 bits (a failed check, not an error)
MAX_DECIMAL_CHARS = 200
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?|[+-]?(Infinity|inf|NaN|sNaN)", re.IGNORECASE)
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class WireError(ValueError):
    """The runner's reply is not well-formed plain data."""


@dataclass(frozen=True, eq=False)
class Opaque:
    """A value that is not plain data (a generator, an object of the sample's own class, ...)."""

    type_name: str

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


# ---------------------------------------------------------------- a total order on plain values
def _number_part(x: Any) -> tuple[int, Any]:
    if isinstance(x, Decimal):
        if x.is_nan():
            return (2, 0)
        if x.is_infinite():
            return (1 if x > 0 else -1, 0)
        return (0, Fraction(x))
    if isinstance(x, float):
        if math.isnan(x):
            return (2, 0)
        if math.isinf(x):
            return (1 if x > 0 else -1, 0)
    return (0, x)  # int, finite float, Fraction: Python compares these exactly with each other


def canon(value: Any) -> tuple:
    """A key with canon(a) == canon(b) exactly when a == b for plain values, and totally ordered.

    Numbers of every type share one rank (1 == 1.0 == True == Fraction(1) == Decimal(1) == 1+0j); NaN
    equals NaN here (Python's containers treat one NaN object as equal to itself; this does for all).
    Anything that is not plain data is keyed by its identity, so it equals only itself."""
    kind = type(value)
    if value is None:
        return (0,)
    if kind in (bool, int, float, Fraction, Decimal):
        return (1, _number_part(value), (0, 0))
    if kind is complex:
        return (1, _number_part(value.real), _number_part(value.imag))
    if kind is str:
        return (2, value)
    if kind is bytes or kind is bytearray:
        return (3, bytes(value))
    if kind is list:
        return (4, tuple(canon(v) for v in value))
    if kind is tuple:
        return (5, tuple(canon(v) for v in value))
    if kind is range:
        n = len(value)
        return (6, n, value[0] if n else 0, value.step if n > 1 else 0)
    if isinstance(value, WireSet):
        return (7, value.keys_)
    if isinstance(value, (set, frozenset)):
        return (7, _unique(value)[1])
    if isinstance(value, WireDict):
        return (8, value.items_key())
    if isinstance(value, dict):
        return (8, tuple(sorted((canon(k), canon(v)) for k, v in value.items())))
    if kind is deque:
        return (9, tuple(canon(v) for v in value))
    return (10, id(value))


def _unique(items: Iterable[Any]) -> tuple[list[Any], tuple]:
    """(members in first-seen order, their sorted distinct keys); no hashing of the members."""
    keyed = [(canon(v), i, v) for i, v in enumerate(items)]
    keyed.sort(key=lambda t: (t[0], t[1]))
    kept: list[tuple[int, Any]] = []
    keys: list[tuple] = []
    for key, i, v in keyed:
        if not keys or keys[-1] != key:
            keys.append(key)
            kept.append((i, v))
    kept.sort(key=lambda t: t[0])
    return [v for _, v in kept], tuple(keys)


class WireSet:
    """A set (or frozenset) of plain values that never hashes its members.

    Iterates in the order the sample's process gave (its own set order); `==`, `in`, `<=`, `<`
    compare through `canon`. Equal to a builtin set or frozenset with the same members, as Python's
    set and frozenset are equal to each other."""

    __slots__ = ("items", "keys_", "frozen")

    def __init__(self, items: Iterable[Any] = (), frozen: bool = False) -> None:
        self.items, self.keys_ = _unique(items)
        self.frozen = frozen

    @property
    def type(self) -> type:
        return frozenset if self.frozen else set

    def _other_keys(self, other: Any) -> tuple | None:
        if isinstance(other, WireSet):
            return other.keys_
        if isinstance(other, (set, frozenset)):
            return canon(other)[1]
        return None

    def __eq__(self, other: object) -> bool:
        keys = self._other_keys(other)
        return NotImplemented if keys is None else self.keys_ == keys  # type: ignore[return-value]

    def __ne__(self, other: object) -> bool:
        keys = self._other_keys(other)
        return NotImplemented if keys is None else self.keys_ != keys  # type: ignore[return-value]

    def _subset(self, keys: tuple) -> bool:
        return all(_has(keys, k) for k in self.keys_)

    def __le__(self, other: Any) -> bool:
        keys = self._other_keys(other)
        return NotImplemented if keys is None else self._subset(keys)  # type: ignore[return-value]

    def __lt__(self, other: Any) -> bool:
        keys = self._other_keys(other)
        return NotImplemented if keys is None else len(self.keys_) < len(keys) and self._subset(keys)  # type: ignore

    def __ge__(self, other: Any) -> bool:
        keys = self._other_keys(other)
        return NotImplemented if keys is None else all(_has(self.keys_, k) for k in keys)  # type: ignore

    def __gt__(self, other: Any) -> bool:
        keys = self._other_keys(other)
        return NotImplemented if keys is None else len(keys) < len(self.keys_) and self >= other  # type: ignore

    def __contains__(self, value: Any) -> bool:
        return _has(self.keys_, canon(value))

    def __iter__(self):  # noqa: ANN204
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __hash__(self) -> int:
        if not self.frozen:
            raise TypeError("unhashable type: 'set'")
        return hash(self.keys_)

    def __repr__(self) -> str:
        if not self.items:
            return "frozenset()" if self.frozen else "set()"
        body = _show_items(self.items)
        return f"frozenset({{{body}}})" if self.frozen else f"{{{body}}}"


class WireDict:
    """A dict of plain values that never hashes its keys: insertion order kept (a key given twice
    keeps its first place and its last value, as dict does); lookups and `==` through `canon`.
    Equal to any builtin dict (Counter, OrderedDict and defaultdict included) with the same items."""

    __slots__ = ("keys", "values", "index")

    def __init__(self, pairs: Iterable[tuple[Any, Any]] = ()) -> None:
        pairs = list(pairs)
        keyed = sorted(((canon(k), i) for i, (k, _) in enumerate(pairs)), key=lambda t: t)
        first: dict[int, int] = {}  # position kept -> position of the last value (ints: cheap to hash)
        index: list[tuple[tuple, int]] = []
        for key, i in keyed:
            if index and index[-1][0] == key:
                first[index[-1][1]] = i
            else:
                index.append((key, i))
                first[i] = i
        order = sorted(first)
        slot = {pos: n for n, pos in enumerate(order)}
        self.keys = [pairs[pos][0] for pos in order]
        self.values = [pairs[first[pos]][1] for pos in order]
        self.index = [(key, slot[i]) for key, i in index]

    def _find(self, key: Any) -> int | None:
        k = canon(key)
        at = bisect.bisect_left(self.index, (k,))
        if at < len(self.index) and self.index[at][0] == k:
            return self.index[at][1]
        return None

    def items_key(self) -> tuple:
        return tuple((key, canon(self.values[n])) for key, n in self.index)

    def __getitem__(self, key: Any) -> Any:
        n = self._find(key)
        if n is None:
            raise KeyError(key)
        return self.values[n]

    def get(self, key: Any, default: Any = None) -> Any:
        n = self._find(key)
        return default if n is None else self.values[n]

    def items(self) -> list[tuple[Any, Any]]:
        return list(zip(self.keys, self.values))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, WireDict):
            return self.items_key() == other.items_key()
        if isinstance(other, dict):
            return self.items_key() == canon(other)[1]
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        same = self.__eq__(other)
        return same if same is NotImplemented else not same

    __hash__ = None  # type: ignore[assignment]

    def __contains__(self, key: Any) -> bool:
        return self._find(key) is not None

    def __iter__(self):  # noqa: ANN204
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __repr__(self) -> str:
        return "{" + _show_items([_Pair(k, v) for k, v in zip(self.keys, self.values)]) + "}"


def _has(keys: tuple, key: tuple) -> bool:
    at = bisect.bisect_left(keys, key)
    return at < len(keys) and keys[at] == key


@dataclass(frozen=True)
class _Pair:
    key: Any
    value: Any

    def __repr__(self) -> str:
        return f"{_SHOW.repr(self.key)}: {_SHOW.repr(self.value)}"


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 120
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxset = _SHOW.maxfrozenset = _SHOW.maxdict = 12
_SHOW.maxlevel = 4


def _show_items(items: list[Any]) -> str:
    shown = []
    for v in items[:12]:
        try:
            shown.append(_SHOW.repr(v))
        except ValueError:  # an integer past Python's digit limit for str()
            shown.append("<a value too large to show>")
    return ", ".join(shown) + (", ..." if len(items) > 12 else "")


def make_set(iterable: Iterable[Any] = (), frozen: bool = False) -> WireSet:
    """set(...)/frozenset(...) for the checks: over the sample's values, without hashing them."""
    if isinstance(iterable, (dict, WireDict)):
        iterable = list(iterable)
    return WireSet(iterable, frozen)


def make_dict(arg: Any = (), **kwargs: Any) -> WireDict:
    """dict(...) for the checks: from a mapping or pairs, without hashing the sample's keys."""
    if isinstance(arg, WireDict):
        pairs = arg.items()
    elif isinstance(arg, dict):
        pairs = list(arg.items())
    else:
        pairs = []
        for item in arg:
            pair = list(item) if isinstance(item, (list, tuple, str, bytes)) else None
            if pair is None or len(pair) != 2:
                raise ValueError("dictionary update sequence element has the wrong length")
            pairs.append((pair[0], pair[1]))
    return WireDict([*pairs, *kwargs.items()])


# ---------------------------------------------------------------- the decoder
class _Budget:
    def __init__(self) -> None:
        self.left = MAX_NODES

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise WireError(f"reply holds more than {MAX_NODES} values")


def _decode(node: Any, depth: int, budget: _Budget) -> Any:
    budget.take()
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if node is None or isinstance(node, (bool, str, float)):
        return node
    if isinstance(node, int):
        return node
    if isinstance(node, list):
        return [_decode(v, depth + 1, budget) for v in node]
    if not isinstance(node, dict) or len(node) != 1:
        raise WireError(f"not a tagged value: {type(node).__name__}")
    (tag, body), = node.items()
    sub = lambda v: _decode(v, depth + 1, budget)  # noqa: E731
    if tag == "tuple":
        return tuple(sub(v) for v in _list(body))
    if tag in ("set", "frozenset"):
        return WireSet((sub(v) for v in _list(body)), frozen=tag == "frozenset")
    if tag == "dict":
        return WireDict((sub(k), sub(v)) for k, v in (_pair(p) for p in _list(body)))
    if tag == "deque":
        return deque(sub(v) for v in _list(body))
    if tag == "bytes" and isinstance(body, str):
        if len(body) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", body):
            raise WireError("bytes field is not hex")
        return bytes.fromhex(body)
    if tag == "complex":
        real, imag = (sub(v) for v in _pair(body))
        if not all(isinstance(x, float) for x in (real, imag)):
            raise WireError("complex parts must be floats")
        return complex(real, imag)
    if tag == "int" and isinstance(body, str):
        return _hex_int(body)
    if tag == "float" and isinstance(body, str) and body in _FLOATS:
        return _FLOATS[body]
    if tag == "fraction":
        num, den = (_int_field(v) for v in _pair(body))
        if den <= 0:
            raise WireError("fraction denominator must be positive")
        return Fraction(num, den)
    if tag == "decimal" and isinstance(body, str):
        if len(body) > MAX_DECIMAL_CHARS or not _DECIMAL.fullmatch(body):
            raise WireError("decimal field is not a short decimal number")
        try:
            return Decimal(body)
        except InvalidOperation as exc:
            raise WireError("decimal field is not a decimal number") from exc
    if tag == "range":
        start, stop, step = (_int_field(v) for v in _triple(body))
        if step == 0:
            raise WireError("range step is zero")
        return range(start, stop, step)
    if tag == "opaque" and isinstance(body, str):
        return Opaque(body[:100])
    raise WireError(f"unknown tag {str(tag)[:40]!r}")


def _hex_int(body: str) -> int:
    digits = body[1:] if body.startswith("-") else body
    digits = digits[2:] if digits[:2].lower() == "0x" else digits
    if not digits or len(digits) > MAX_INT_HEX or not re.fullmatch(r"[0-9a-fA-F]+", digits):
        raise WireError("int field is not a hex integer")
    value = int(digits, 16)
    return -value if body.startswith("-") else value


def _int_field(node: Any) -> int:
    if type(node) is int:
        return node
    if isinstance(node, dict) and set(node) == {"int"} and isinstance(node["int"], str):
        return _hex_int(node["int"])
    raise WireError("expected an integer")


def _list(body: Any) -> list:
    if not isinstance(body, list):
        raise WireError("tagged body must be a list")
    return body


def _pair(body: Any) -> list:
    if not isinstance(body, list) or len(body) != 2:
        raise WireError("expected a pair")
    return body


def _triple(body: Any) -> list:
    if not isinstance(body, list) or len(body) != 3:
        raise WireError("expected three values")
    return body


def decode_reply(line: bytes) -> dict[str, Any]:
    """One reply line as {"ok": True} | {"ready": True} | {"value": decoded} | {"raised": name, "tail": text}.

    Raises WireError, and nothing else, for any line that is not such a reply."""
    try:
        return _decode_reply(line)
    except WireError:
        raise
    except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 - whatever a hostile line triggers
        raise WireError(f"unreadable reply ({type(exc).__name__})") from None


def _decode_reply(line: bytes) -> dict[str, Any]:
    if not isinstance(line, (bytes, bytearray)):
        raise WireError("reply is not bytes")
    if len(line) > MAX_REPLY_BYTES:
        raise WireError(f"reply larger than {MAX_REPLY_BYTES} bytes")
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"reply is not JSON ({type(exc).__name__})") from exc
    if not isinstance(reply, dict):
        raise WireError("reply is not an object")
    if set(reply) == {"ok"} and reply["ok"] is True:
        return {"ok": True}
    if set(reply) == {"ready"} and reply["ready"] is True:
        return {"ready": True}
    if set(reply) == {"value"}:
        return {"value": _decode(reply["value"], 0, _Budget())}
    if set(reply) == {"raised", "tail"} and isinstance(reply["raised"], str) and isinstance(reply["tail"], str):
        return {"raised": reply["raised"][:100], "tail": reply["tail"][-4000:]}
    raise WireError("reply has unknown fields")
