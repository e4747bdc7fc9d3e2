"""Unit tests checked in the trusted process: the sample only answers for its own values.

A test list (MBPP: `test_setup_code`, then asserts such as `assert f((1, 2), 3) == (4, 5)`) comes
from the dataset, never from the model, so it is parsed here with `ast`. Each assert's condition
is evaluated in this process over plain values: literals (`ast.literal_eval`), comparisons,
`and`/`or`/`not`, simple arithmetic, indexing, and a short list of pure builtins (`set`, `sorted`,
`len`, `round`, `abs`, `math.isclose`, ...). Every other sub-expression (`f((1, 2), 3)`, or
`max_chain_length([Pair(5, 24)], 1)` that builds the sample's own objects) is sent whole to the
sandboxed process, which evaluates it in the sample's namespace and answers with plain data
(tasks/verify/sandbox/wire.py). So the expected side of a comparison never enters the sample's process,
and the comparison itself runs here on decoded builtin values.

The sample's process is only asked for parts that start from the sample's own names (or from a
listed builtin fed the sample's values and a lambda). A test that would need more from it is
refused as unsupported rather than run where the sample could decide it: a comparison inside
such a part (`all(f(x) == y for x, y in pairs)`), a call to a helper of the tests' own setup
code that compares, or an expected value this process cannot compute (`' '.join(...)`).

Names are resolved here, not in the sample: `sorted` in a test is always the builtin.
"""

from __future__ import annotations

import ast
import builtins
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.verify.sandbox.wire import Opaque

_FUNCTIONS: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    abs, all, any, bool, dict, float, frozenset, int, isinstance, len, list, max, min, round, set, sorted,
    str, sum, tuple, type, complex, range, reversed, enumerate, zip, map, filter, chr, ord, hex, bin, oct, divmod)}
_BUILTIN_NAMES = frozenset(dir(builtins))
_MATH: dict[str, Any] = {name: getattr(math, name) for name in (
    "isclose", "isnan", "isinf", "isfinite", "floor", "ceil", "trunc", "fabs", "sqrt", "pi", "e", "tau", "inf",
    "nan")}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: operator.contains(b, a), ast.NotIn: lambda a, b: not operator.contains(b, a)}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos}
_MAX_INT_BITS = 100_000  # arithmetic on the sample's numbers must stay cheap here
_MAX_ITEMS = 1_000_000


class UnsupportedTest(ValueError):
    """A test statement the trusted side cannot check without trusting the sample."""


class CheckFailed(Exception):
    """An assertion is false, or it met a value that is not plain data."""


class RemoteRaised(Exception):
    """The sample's process raised while evaluating a sub-expression or a statement."""

    def __init__(self, name: str, tail: str) -> None:
        super().__init__(name)
        self.name, self.tail = name, tail


@dataclass(frozen=True)
class Step:
    """One statement: `exec` runs it in the sample's process; `assert` is checked here; `bind` keeps
    here the value of a setup assignment whose right-hand side is computed here."""

    kind: str  # "exec", "bind" or "assert"
    source: str
    node: ast.expr | None = None
    bound: frozenset[str] = frozenset()  # names whose values this process holds at this step
    targets: tuple[str, ...] = ()


def _is_trusted_name(node: ast.AST, bound: frozenset[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _FUNCTIONS or node.id in bound
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math"
            and node.attr in _MATH)


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


_FUNCTION_VALUES = (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp, ast.Starred)


def _trusted_children(node: ast.AST, bound: frozenset[str]) -> list[ast.AST] | None:
    """The sub-expressions to evaluate when `node` is evaluated here, or None: `node` runs remotely."""
    if _is_trusted_name(node, bound) or _is_literal(node):
        return []
    if isinstance(node, ast.Compare):
        return [node.left, *node.comparators]
    if isinstance(node, ast.BoolOp):
        return list(node.values)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return [node.operand]
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        return [node.left, node.right]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and not any(isinstance(e, ast.Starred) for e in node.elts):
        return list(node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return [*node.keys, *node.values]  # type: ignore[list-item]
    if isinstance(node, ast.Subscript):
        index = node.slice
        parts = [index.lower, index.upper, index.step] if isinstance(index, ast.Slice) else [index]
        return [node.value, *(p for p in parts if p is not None)]
    if isinstance(node, ast.Call) and _is_trusted_name(node.func, bound) and all(k.arg for k in node.keywords):
        args = [*node.args, *(k.value for k in node.keywords)]
        # a builtin fed a lambda or a generator (max(..., key=lambda ...)) runs whole in the sample's process
        return None if any(isinstance(a, _FUNCTION_VALUES) for a in args) else args
    return None


def _remote_parts(node: ast.AST, bound: frozenset[str]) -> list[ast.expr]:
    children = _trusted_children(node, bound)
    if children is None:
        return [node]  # type: ignore[list-item]
    return [part for child in children for part in _remote_parts(child, bound)]


def _names(node: ast.AST) -> set[str]:
    """Names `node` reads from outside: not those its comprehensions and lambdas bind themselves."""
    local = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    local |= {a.arg for n in ast.walk(node) if isinstance(n, ast.Lambda)
              for a in (*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs, n.args.vararg, n.args.kwarg) if a}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - local


def _root(node: ast.AST) -> str | None:
    """The name a call, attribute or subscript chain starts from (`f` in `f(1).x[0]`), if any."""
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound_by(stmt: ast.stmt) -> set[str]:
    names = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {n.name for n in ast.walk(stmt) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return names | {(a.asname or a.name).partition(".")[0] for n in ast.walk(stmt)
                    if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}


class _Scope:
    """What each name in the tests stands for, as the statements bind them."""

    def __init__(self) -> None:
        self.bound: frozenset[str] = frozenset()  # values this process computed
        self.test_owned: set[str] = set()  # imports and definitions of the tests' own setup code
        self.logic: set[str] = set()  # of those, the ones holding comparisons

    def of_sample(self, node: ast.AST) -> set[str]:
        """Names in `node` that stand for the sample's code (or inputs built from it)."""
        return {name for name in _names(node) if self.is_sample(name)}

    def is_sample(self, name: str) -> bool:
        return name not in _BUILTIN_NAMES and name not in self.test_owned and name not in self.bound

    def check_remote(self, part: ast.expr, source: str) -> None:
        """A part evaluated by the sample's process must only be the sample answering for itself."""
        shown = ast.unparse(part)[:80]
        if any(isinstance(n, ast.Compare) for n in ast.walk(part)):
            raise UnsupportedTest(f"the comparison in {source[:120]!r} would run in the sample's process "
                                  f"(inside {shown!r})")
        if _names(part) & self.logic:
            raise UnsupportedTest(f"{source[:120]!r} calls test code that compares inside the sample's process "
                                  f"({shown!r})")
        root = _root(part)
        foreign_root = root is not None and root not in _FUNCTIONS and not self.is_sample(root)
        if not self.of_sample(part) or foreign_root:
            # e.g. `' '.join(...)`, or `isclose(f(1), 2.0)` after `from math import isclose`: a value, or a
            # comparison, that the sample's process would decide although it is not the sample's (a listed
            # builtin fed a lambda, `max(f(x), key=lambda t: t[1])`, only orders the sample's own values)
            raise UnsupportedTest(f"{shown!r} in {source[:120]!r} is not the sample's own value, and this "
                                  "process cannot compute it; the sample's process would decide it")


def plan_tests(tests: list[str]) -> list[Step]:
    """Parse the test statements; raise UnsupportedTest for one the trusted side cannot check."""
    steps: list[Step] = []
    scope = _Scope()
    for text in tests:
        try:
            module = ast.parse(text)
        except (SyntaxError, ValueError) as exc:
            raise UnsupportedTest(f"test {text[:80]!r} is not valid Python ({type(exc).__name__})") from exc
        for stmt in module.body:
            source = ast.unparse(stmt)
            if isinstance(stmt, ast.Assert):
                for part in _remote_parts(stmt.test, scope.bound):
                    scope.check_remote(part, source)
                steps.append(Step("assert", source, stmt.test, scope.bound))
                continue
            steps.append(Step("exec", source))  # setup code also runs where the sample's code can use it
            names = _bound_by(stmt)
            scope.bound -= names
            scope.test_owned -= names
            scope.logic -= names
            if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
                parts = _remote_parts(stmt.value, scope.bound)
                if not parts:  # `name = <value computed here>`: asserts compare against this process's copy
                    targets = tuple(t.id for t in stmt.targets)  # type: ignore[attr-defined]
                    steps.append(Step("bind", source, stmt.value, scope.bound, targets))
                    scope.bound |= set(targets)
                    continue
                for part in parts:  # an input built from the sample's code, e.g. `pairs = [Pair(1, 2)]`
                    scope.check_remote(part, source)
                continue
            scope.test_owned |= names
            if any(isinstance(n, ast.Compare) for n in ast.walk(stmt)):
                scope.logic |= names
    return steps


def _guard(value: Any) -> Any:
    if isinstance(value, Opaque):
        raise CheckFailed(f"a {value.type_name} object is not plain data")
    if type(value) is int and value.bit_length() > _MAX_INT_BITS:
        raise CheckFailed("an integer too large to check")
    if type(value) is range and len(value) > _MAX_ITEMS:
        raise CheckFailed("a range too long to check")
    if isinstance(value, (str, bytes, list, tuple, set, frozenset, dict)) and len(value) > _MAX_ITEMS:
        raise CheckFailed("a value too large to check")
    return value


class Evaluator:
    """Evaluates asserts here; `remote(source)` returns the sample's decoded value for a sub-expression."""

    def __init__(self, remote: Callable[[str], Any]) -> None:
        self.remote = remote
        self.bindings: dict[str, Any] = {}
        self.seen: list[tuple[str, Any]] = []  # the sample's values in the last check, for the message

    def bind(self, step: Step) -> None:
        value = _guard(self._eval(step.node, step.bound))  # type: ignore[arg-type]
        self.bindings.update(dict.fromkeys(step.targets, value))

    def check(self, step: Step) -> None:
        """Raise CheckFailed when the assert is false; RemoteRaised when the sample raised."""
        self.seen = []
        if not _guard(self._eval(step.node, step.bound)):  # type: ignore[arg-type]
            raise CheckFailed("the assertion is false")

    def _eval(self, node: ast.AST, bound: frozenset[str]) -> Any:
        if _trusted_children(node, bound) is None:
            source = ast.unparse(node)
            value = self.remote(source)
            self.seen.append((source, value))
            return value
        if isinstance(node, ast.Name):
            return self.bindings[node.id] if node.id in bound else _FUNCTIONS[node.id]
        if isinstance(node, ast.Attribute):
            return _MATH[node.attr]
        if _is_literal(node):
            return ast.literal_eval(node)
        ev = lambda n: _guard(self._eval(n, bound))  # noqa: E731
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            value = None
            for part in node.values:
                value = ev(part)
                if bool(value) is isinstance(node.op, ast.Or):  # `or` stops at a true value, `and` at a false
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.BinOp):
            return _arith(node.op, ev(node.left), ev(node.right))
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.Set):
            return {ev(e) for e in node.elts}
        if isinstance(node, ast.Dict):
            return {ev(k): ev(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
        if isinstance(node, ast.Subscript):
            index = node.slice
            key = (slice(*(ev(p) if p is not None else None for p in (index.lower, index.upper, index.step)))
                   if isinstance(index, ast.Slice) else ev(index))
            return ev(node.value)[key]
        if isinstance(node, ast.Call):
            func = self._eval(node.func, bound)
            args = [ev(a) for a in node.args]
            kwargs = {k.arg: ev(k.value) for k in node.keywords}
            if func is round and len(args) > 1 and not (type(args[1]) is int and abs(args[1]) <= 1000):
                raise CheckFailed("round() with an unusual number of digits")
            return func(*args, **kwargs)
        raise AssertionError(f"unhandled node {type(node).__name__}")  # _trusted_children and this must agree


def _arith(op: ast.operator, left: Any, right: Any) -> Any:
    numbers = (int, float, complex, bool)
    if isinstance(left, numbers) and isinstance(right, numbers):
        if isinstance(op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and \
                abs(right) * max(abs(left).bit_length(), 1) > _MAX_INT_BITS:
            raise CheckFailed("a power too large to check")
        return _guard(_ARITH[type(op)](left, right))
    sequences = (str, bytes, list, tuple)
    if isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, sequences):
        return _guard(left + right)
    if isinstance(op, ast.Mult):
        seq, times = (left, right) if isinstance(left, sequences) else (right, left)
        if isinstance(seq, sequences) and type(times) is int and len(seq) * max(times, 0) <= _MAX_ITEMS:
            return seq * times
    raise CheckFailed(f"{type(left).__name__} {type(op).__name__} {type(right).__name__} is not checked here")
