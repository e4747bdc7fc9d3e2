"""Standard-library value types a test may build its expected values from, built on the trusted side.

`from collections import Counter` then `assert count(s) == Counter({'a': 2})`: the expected value is
the tests' own, so it must not be computed in the sample's process (where `Counter` is whatever the
sample makes of it). The planner (tasks/verify/sandbox/checks.py) binds the names such an import
brings to the constructors here, which build the value in this process from plain data: Counter,
OrderedDict and defaultdict as WireDict (equal to any dict with the same items, never hashing a
key, so a sample's values cannot make the count quadratic), deque, Fraction and Decimal as
themselves, with their inputs bounded. The import still runs in the sample's process too, for the
inputs the tests build there. Reaching a type through its module (`collections.Counter(...)`) is
not supported: `collections` would be whatever the sample's code calls it.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tasks.verify.sandbox.wire import MAX_DECIMAL_CHARS, WireDict, WireSet, canon, make_dict

MAX_TEXT = 1_000  # characters of a number written as text (Fraction('1/3'), Decimal('0.1'))


class ConstructorError(ValueError):
    """A trusted constructor met an input it does not build (the check fails, never the verifier)."""


def _items(iterable: Any) -> list[Any]:
    if isinstance(iterable, (str, bytes, list, tuple, range, deque, WireSet, dict, WireDict)):
        return list(iterable)
    raise ConstructorError(f"cannot iterate a {type(iterable).__name__} here")


def counter(arg: Any = (), **kwargs: Any) -> WireDict:
    """Counter(iterable) counts by equality (sorted by `canon`, first-seen order kept); Counter(mapping)
    and Counter(**counts) take the counts as given."""
    if isinstance(arg, (dict, WireDict)):
        return make_dict(arg, **kwargs)
    items = _items(arg)
    keyed = sorted(((canon(v), i) for i, v in enumerate(items)), key=lambda t: t)
    firsts: list[tuple[int, int]] = []  # (first position, count) per distinct value
    last = None
    for key, i in keyed:
        if firsts and key == last:
            firsts[-1] = (firsts[-1][0], firsts[-1][1] + 1)
        else:
            firsts.append((i, 1))
            last = key
    firsts.sort()
    return make_dict([(items[i], n) for i, n in firsts], **kwargs)


def ordered_dict(arg: Any = (), **kwargs: Any) -> WireDict:
    return make_dict(arg, **kwargs)


def default_dict(factory: Any = None, arg: Any = (), **kwargs: Any) -> WireDict:
    """defaultdict(factory, items): the items; the factory only matters for keys never looked up here."""
    del factory
    return make_dict(arg, **kwargs)


def make_deque(iterable: Any = (), maxlen: int | None = None) -> deque:
    if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
        raise ConstructorError("deque maxlen must be a non-negative int")
    return deque(_items(iterable), maxlen)


def fraction(numerator: Any = 0, denominator: Any = None) -> Fraction:
    for part in (numerator, denominator):
        if isinstance(part, str) and len(part) > MAX_TEXT:
            raise ConstructorError("a Fraction written with too many characters")
        if part is not None and not isinstance(part, (int, float, str, Fraction, Decimal)):
            raise ConstructorError(f"Fraction of a {type(part).__name__}")
    return Fraction(numerator) if denominator is None else Fraction(numerator, denominator)


def decimal(value: Any = "0") -> Decimal:
    if isinstance(value, str) and len(value) > MAX_DECIMAL_CHARS:
        raise ConstructorError("a Decimal written with too many characters")
    if not isinstance(value, (int, float, str, Decimal)):
        raise ConstructorError(f"Decimal of a {type(value).__name__}")
    return Decimal(value)


TRUSTED: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "Counter"): counter, ("collections", "OrderedDict"): ordered_dict,
    ("collections", "defaultdict"): default_dict, ("collections", "deque"): make_deque,
    ("fractions", "Fraction"): fraction, ("decimal", "Decimal"): decimal,
}


def imported_constructors(stmt: ast.Import | ast.ImportFrom) -> dict[str, Callable[..., Any]]:
    """The names `from collections import Counter [as C]` (and the like) bind, with their constructors."""
    if not isinstance(stmt, ast.ImportFrom) or stmt.level or stmt.module is None:
        return {}
    return {(a.asname or a.name): TRUSTED[(stmt.module, a.name)] for a in stmt.names
            if (stmt.module, a.name) in TRUSTED}
