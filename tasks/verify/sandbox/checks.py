"""Unit tests checked in the trusted process: the sample only answers for its own values.

A test list (MBPP: `test_setup_code`, then asserts such as `assert f((1, 2), 3) == (4, 5)`;
HumanEval: `def check(candidate): assert candidate(...) == ...` then `check(f)`) comes from the
dataset, never from the model, so it is parsed here with `ast` and planned before anything runs.
Each assert's condition is evaluated in this process over plain values: literals, comparisons,
`and`/`or`/`not`, simple arithmetic, indexing, and a short list of pure builtins (`set`, `sorted`,
`len`, `round`, `abs`, `math.isclose`, `math.factorial`, ...). Every other sub-expression
(`f((1, 2), 3)`, or `max_chain_length([Pair(5, 24)], 1)` that builds the sample's own objects) is
sent whole to the sandboxed process, which evaluates it in the sample's namespace and answers with
plain data (tasks/verify/sandbox/wire.py). `str(...)` and `repr(...)` of a value the sample computes
are sent whole too: the text of its own object is the sample's to give, like any value it returns.
So the expected side of a comparison never enters the sample's process, and the comparison itself
runs here on decoded builtin values.

Statements the planner accepts, and what it does with each:
- `assert`: checked here (its message is never evaluated);
- `name = <value computed here>` (also `a, b = ...`): kept here only; where a later part sent to the
  sample uses the name, its value is written into that part as a literal, so the tests' own values
  never become names in the sample's namespace;
- `name = <the sample's value>` (`pairs = [Pair(1, 2)]`, `got = f(3)`): run in the sample's process;
- imports, and classes and functions without asserts: run in the sample's process, as inputs for it;
  `from collections import Counter` (OrderedDict, defaultdict, deque; fractions.Fraction,
  decimal.Decimal) also binds the name here, so expected values of those types are built in this
  process (tasks/verify/sandbox/constructors.py);
- `if __name__ == "__main__":` and `if` over values computed here: the branch taken is planned;
- `for` over a value computed here (at most MAX_UNROLL items): unrolled, one plan per item;
- `def check(candidate): <asserts>` followed by `check(f)`: the body planned with `f` for `candidate`.

Everything else is refused as UnsupportedTest rather than run where the sample could decide it:
other statements that call or compare (`f(x)` alone, `while`, `try`, `with`), a loop or condition
over the sample's values, a function with asserts that the tests never call, a comparison inside a
part the sample would evaluate (`all(f(x) == y for x, y in pairs)`), a call to a helper of the
tests' own setup code that compares, an expected value this process cannot compute
(`' '.join(...)`), a module the tests reach into without importing it (`collections.Counter(...)`
would be whatever the sample calls `collections`), a setup statement that changes a value in place
(`want[0] = 5`), and a test list with no assert left to check.

Names are resolved here, not in the sample: `sorted` in a test is always the builtin.
"""

from __future__ import annotations

import ast
import builtins
import copy
import math
import operator
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tasks.verify.sandbox.constructors import imported_constructors
from tasks.verify.sandbox.wire import Opaque, WireDict, WireSet, make_dict, make_set

_MAX_FACTORIAL = 10_000


def _small(fn: Callable[..., Any], limit: int) -> Callable[..., Any]:
    def bounded(*args: Any) -> Any:
        if any(type(a) is int and abs(a) > limit for a in args):
            raise CheckFailed(f"math.{fn.__name__} of a number above {limit} is not checked here")
        return fn(*args)
    bounded.__name__ = fn.__name__
    return bounded


def _isinstance(value: Any, kinds: Any) -> bool:
    if isinstance(value, WireSet):
        value = value.type()
    elif isinstance(value, WireDict):
        value = {}
    return isinstance(value, kinds)


def _type(value: Any) -> type:
    if isinstance(value, WireSet):
        return value.type
    if isinstance(value, WireDict):
        return dict
    return type(value)


_FUNCTIONS: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    abs, all, any, bool, float, int, len, list, max, min, round, sorted, repr,
    str, sum, tuple, complex, range, reversed, enumerate, zip, map, filter, chr, ord, hex, bin, oct, divmod)}
_FUNCTIONS |= {"set": make_set, "frozenset": lambda it=(): make_set(it, frozen=True), "dict": make_dict,
               "isinstance": _isinstance, "type": _type}
_TEXT = ("str", "repr")  # of the sample's value: computed by the sample's process (see the docstring)
_BUILTIN_NAMES = frozenset(dir(builtins))
_MATH: dict[str, Any] = {name: getattr(math, name) for name in (
    "isclose", "isnan", "isinf", "isfinite", "floor", "ceil", "trunc", "fabs", "sqrt", "pi", "e", "tau", "inf",
    "nan", "log", "log2", "log10", "exp", "pow", "hypot", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
    "degrees", "radians", "fsum", "copysign")}
_MATH |= {"factorial": _small(math.factorial, _MAX_FACTORIAL), "comb": _small(math.comb, _MAX_FACTORIAL),
          "perm": _small(math.perm, _MAX_FACTORIAL), "gcd": math.gcd, "lcm": _small(math.lcm, 2 ** 64),
          "isqrt": math.isqrt}
_MODULES = frozenset(sys.stdlib_module_names)
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
MAX_UNROLL = 1_000  # items of one `for` loop the planner unrolls
MAX_STEPS = 10_000  # planned steps in all, after unrolling
MAX_INLINE_CHARS = 1_000_000  # a value of the tests written into a part the sample evaluates


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
    """One statement: `exec` runs it in the sample's process; `assert` is checked here; `bind` sets
    here the values (computed when the tests were planned) of names the tests keep here."""

    kind: str  # "exec", "bind" or "assert"
    source: str
    node: ast.expr | None = None
    bound: frozenset[str] = frozenset()  # names whose values this process holds at this step
    targets: tuple[str, ...] = ()
    values: tuple[Any, ...] = field(default=(), compare=False, hash=False)


def _is_trusted_name(node: ast.AST, bound: frozenset[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _FUNCTIONS or node.id in bound
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math"
            and node.attr in _MATH and "math" not in bound)


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
        if any(isinstance(a, _FUNCTION_VALUES) for a in args):
            return None
        # str()/repr() of the sample's value: the text of its own object comes from its process
        if (isinstance(node.func, ast.Name) and node.func.id in _TEXT and node.func.id not in bound
                and any(_remote_parts(a, bound) for a in args)):
            return None
        return args
    return None


def _remote_parts(node: ast.AST, bound: frozenset[str]) -> list[ast.expr]:
    children = _trusted_children(node, bound)
    if children is None:
        return [node]  # type: ignore[list-item]
    return [part for child in children for part in _remote_parts(child, bound)]


def _local_names(node: ast.AST) -> set[str]:
    local = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return local | {a.arg for n in ast.walk(node) if isinstance(n, ast.Lambda)
                    for a in (*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs, n.args.vararg, n.args.kwarg)
                    if a}


def _names(node: ast.AST) -> set[str]:
    """Names `node` reads from outside: not those its comprehensions and lambdas bind themselves."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - \
        _local_names(node)


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


def _literal_source(value: Any, depth: int = 0) -> str:
    """Python source that rebuilds a plain value of the tests without a name the sample could redefine
    (except `frozenset` and `range`, which only change the sample's own input if it does)."""
    if depth > 100:
        raise UnsupportedTest("a value of the tests nested too deeply to send to the sample")
    sub = lambda v: _literal_source(v, depth + 1)  # noqa: E731
    kind = type(value)
    if value is None or kind in (bool, str, bytes):
        return repr(value)
    if kind is int:
        return repr(value) if value.bit_length() < 10_000 else ("-" if value < 0 else "") + hex(abs(value))
    if kind is float:
        return repr(value) if math.isfinite(value) else ("1e999" if value > 0 else "-1e999") \
            if not math.isnan(value) else "(1e999 - 1e999)"
    if kind is complex:
        return f"({sub(value.real)} + {sub(value.imag)} * 1j)"
    if kind is list:
        return "[" + ", ".join(map(sub, value)) + "]"
    if kind is tuple:
        return "(" + "".join(sub(v) + ", " for v in value) + ")"
    if kind in (set, frozenset) or isinstance(value, WireSet):
        body = "{" + ", ".join(map(sub, value)) + "}" if len(value) else "{*()}"
        return f"frozenset({body})" if kind is frozenset or getattr(value, "frozen", False) else body
    if kind is dict or isinstance(value, WireDict):
        pairs = value.items() if kind is dict else zip(value.keys, value.values)
        return "{" + ", ".join(f"{sub(k)}: {sub(v)}" for k, v in pairs) + "}"
    if kind is range:
        return f"range({value.start}, {value.stop}, {value.step})"
    raise UnsupportedTest(f"a {kind.__name__} value of the tests cannot be sent to the sample")


def _uses_module(node: ast.AST) -> str | None:
    """A standard-library module name `node` reaches into (`collections.Counter`), if any."""
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in _MODULES:
            return n.value.id
    return None


def _swap(parent: ast.AST, old: ast.AST, new: ast.AST) -> bool:
    for name, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, name, new)
            return True
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if item is old and isinstance(value, list):
                value[i] = new
                return True
            if isinstance(item, (ast.keyword, ast.Slice)) and _swap(item, old, new):
                return True
    return False


class _Unsupported(Exception):
    """Raised while evaluating the tests' own values at planning time."""


def _no_remote(source: str) -> Any:
    raise _Unsupported(source)


class _Planner:
    """What each name in the tests stands for, as the statements bind them, and the steps so far."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.bound: frozenset[str] = frozenset()  # values this process computed
        self.values: dict[str, Any] = {}  # ... and those values
        self.test_owned: set[str] = set()  # imports and definitions of the tests' own setup code
        self.logic: set[str] = set()  # of those, the ones holding comparisons
        self.checks: dict[str, ast.FunctionDef] = {}  # test functions holding asserts, planned when called
        self.called: set[str] = set()
        self.imported: set[str] = set()  # module names the tests import
        self.constructors: set[str] = set()  # bound names of trusted constructors (constructors.py)

    # ------------------------------------------------------------ names
    def is_sample(self, name: str) -> bool:
        return (name not in _BUILTIN_NAMES and name not in self.test_owned and name not in self.bound
                and name not in self.checks)

    def of_sample(self, node: ast.AST) -> set[str]:
        """Names in `node` that stand for the sample's code (or inputs built from it)."""
        return {name for name in _names(node) if self.is_sample(name)}

    def forget(self, names: set[str]) -> None:
        self.constructors -= names
        self.bound -= names
        self.test_owned -= names
        self.logic -= names
        for name in names:
            self.values.pop(name, None)
            self.checks.pop(name, None)

    def add(self, step: Step) -> None:
        self.steps.append(step)
        if len(self.steps) > MAX_STEPS:
            raise UnsupportedTest(f"the tests plan to more than {MAX_STEPS} steps")

    # ------------------------------------------------------------ values
    def compute(self, node: ast.expr, source: str) -> Any:
        """A value of the tests' own, computed here now, or UnsupportedTest."""
        evaluator = Evaluator(_no_remote)
        evaluator.bindings = dict(self.values)
        try:
            return _guard(evaluator._eval(node, self.bound))
        except UnsupportedTest:
            raise
        except (_Unsupported, Exception) as exc:  # noqa: BLE001 - the tests' own value fails to compute here
            raise UnsupportedTest(f"{source[:120]!r}: the tests' own value cannot be computed here "
                                  f"({type(exc).__name__})") from None

    def bind(self, names: tuple[str, ...], values: tuple[Any, ...], source: str) -> None:
        self.forget(set(names))
        self.bound |= set(names)
        self.values.update(zip(names, values))
        self.add(Step("bind", source, None, self.bound, names, values))

    # ------------------------------------------------------------ parts the sample evaluates
    def check_remote(self, part: ast.expr, source: str, input_only: bool = False) -> None:
        """A part evaluated by the sample's process must only be the sample answering for itself
        (`input_only`: or an input the tests build there with their own classes, `[Box(1)]`)."""
        shown = ast.unparse(part)[:80]
        if any(isinstance(n, ast.Compare) for n in ast.walk(part)):
            raise UnsupportedTest(f"the comparison in {source[:120]!r} would run in the sample's process "
                                  f"(inside {shown!r})")
        if _names(part) & self.logic:
            raise UnsupportedTest(f"{source[:120]!r} calls test code that compares inside the sample's process "
                                  f"({shown!r})")
        if _names(part) & set(self.checks):
            raise UnsupportedTest(f"{source[:120]!r} uses a test function holding asserts as a value ({shown!r})")
        module = _uses_module(part)
        if module is not None and module not in self.imported and module not in self.bound | self.test_owned:
            raise UnsupportedTest(f"{source[:120]!r} uses the module {module!r} without importing it: the name "
                                  "would be whatever the sample's code calls it")
        if input_only:
            return
        root = _root(part)
        foreign_root = root is not None and root not in _FUNCTIONS and not self.is_sample(root)
        if not self.of_sample(part) or foreign_root:
            # e.g. `' '.join(...)`, or `isclose(f(1), 2.0)` after `from math import isclose`: a value, or a
            # comparison, that the sample's process would decide although it is not the sample's (a listed
            # builtin fed a lambda, `max(f(x), key=lambda t: t[1])`, only orders the sample's own values)
            raise UnsupportedTest(f"{shown!r} in {source[:120]!r} is not the sample's own value, and this "
                                  "process cannot compute it; the sample's process would decide it")

    def inline(self, part: ast.expr) -> ast.expr:
        """`part` with each name of a value held here replaced by that value as a literal."""
        names = _names(part) & (self.bound - self.constructors)  # a constructor's name is the sample's import too
        if not names:
            return part
        if isinstance(part, ast.Name):
            return self._literal(part.id)
        for node in list(ast.walk(part)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load) and child.id in names:
                    _swap(node, child, self._literal(child.id))
        return part

    def _literal(self, name: str) -> ast.expr:
        source = _literal_source(self.values[name])
        if len(source) > MAX_INLINE_CHARS:
            raise UnsupportedTest(f"the value of {name!r} is too large to send to the sample")
        return ast.parse(source, mode="eval").body

    def remote_expr(self, node: ast.expr, source: str) -> ast.expr:
        """`node` with every part the sample evaluates checked and its values of the tests inlined."""
        children = _trusted_children(node, self.bound)
        if children is None:
            self.check_remote(node, source)
            return self.inline(node)
        for child in children:
            new = self.remote_expr(child, source)  # type: ignore[arg-type]
            if new is not child:
                _swap(node, child, new)
        return node

    # ------------------------------------------------------------ statements
    def block(self, stmts: list[ast.stmt], depth: int) -> None:
        if depth > 20:
            raise UnsupportedTest("the tests nest statements too deeply")
        for stmt in stmts:
            self.statement(stmt, depth)

    def statement(self, stmt: ast.stmt, depth: int) -> None:
        source = ast.unparse(stmt)
        if isinstance(stmt, ast.Assert):
            test = self.remote_expr(copy.deepcopy(stmt.test), source)
            self.add(Step("assert", source, test, self.bound))
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            self.assign(stmt, source)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names = _bound_by(stmt)
            self.forget(names)
            self.test_owned |= names
            if isinstance(stmt, ast.Import):
                self.imported |= {a.name.partition(".")[0] for a in stmt.names if a.asname is None}
            self.add(Step("exec", source))
            if built_here := imported_constructors(stmt):  # expected values of these types are built here
                self.bind(tuple(built_here), tuple(built_here.values()), source)
                self.constructors |= set(built_here)
        elif isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            self.definition(stmt, source)
        elif isinstance(stmt, ast.Expr):
            self.expression(stmt, source, depth)
        elif isinstance(stmt, ast.Pass):
            pass
        elif isinstance(stmt, ast.If):
            self.branch(stmt, source, depth)
        elif isinstance(stmt, ast.For):
            self.loop(stmt, source, depth)
        else:
            raise UnsupportedTest(f"{source[:120]!r}: a {type(stmt).__name__} statement in the tests would run in "
                                  "the sample's process")

    def assign(self, stmt: ast.Assign | ast.AnnAssign, source: str) -> None:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        if stmt.value is None:
            raise UnsupportedTest(f"{source[:120]!r}: an annotation without a value")
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        unpack = (len(targets) == 1 and isinstance(targets[0], (ast.Tuple, ast.List))
                  and all(isinstance(e, ast.Name) for e in targets[0].elts))
        if len(names) != len(targets) and not unpack:
            # `want[0] = 5`, `obj.x = 1`: changes a value in place, here or in the sample
            raise UnsupportedTest(f"{source[:120]!r}: a setup statement that changes a value in place is not "
                                  "checked (only `name = value` is)")
        if not _remote_parts(stmt.value, self.bound):
            value = self.compute(stmt.value, source)
            if unpack:
                names = [e.id for e in targets[0].elts]  # type: ignore[union-attr]
                items = list(value) if isinstance(value, (list, tuple, str, range, WireSet, WireDict)) else None
                if items is None or len(items) != len(names):
                    raise UnsupportedTest(f"{source[:120]!r}: cannot unpack the value here")
                self.bind(tuple(names), tuple(items), source)
            else:
                self.bind(tuple(names), (value,) * len(names), source)
            return
        if unpack:
            names = [e.id for e in targets[0].elts]  # type: ignore[union-attr]
        # an input built from the sample's code (`pairs = [Pair(1, 2)]`), or its value (`got = f(3)`); or
        # one built only from the tests' own classes (`boxes = [Box(1)]`): that name stays the tests' own,
        # so a part that is only it (`assert boxes == ...`) is refused as not the sample's answer
        own_input = not self.of_sample(stmt.value)
        self.check_remote(stmt.value, source, input_only=own_input)
        value = self.inline(copy.deepcopy(stmt.value))
        new = ast.Assign(targets=copy.deepcopy(targets), value=value, lineno=1)
        self.forget(set(names))
        if own_input:
            self.test_owned |= set(names)
        self.add(Step("exec", ast.unparse(new)))

    def definition(self, stmt: ast.FunctionDef | ast.ClassDef, source: str) -> None:
        has_assert = any(isinstance(n, ast.Assert) for n in ast.walk(stmt))
        self.forget({stmt.name})
        if isinstance(stmt, ast.FunctionDef) and has_assert:
            self.checks[stmt.name] = stmt  # planned where the tests call it
            return
        if has_assert:
            raise UnsupportedTest(f"asserts inside the class {stmt.name!r} would run in the sample's process")
        if kept := (_names(stmt) & self.bound) - self.constructors:
            raise UnsupportedTest(f"{stmt.name!r} uses values the tests keep here "
                                  f"({', '.join(sorted(kept))}) inside the sample's process")
        self.test_owned.add(stmt.name)
        if any(isinstance(n, ast.Compare) for n in ast.walk(stmt)):
            self.logic.add(stmt.name)
        self.add(Step("exec", source))

    def expression(self, stmt: ast.Expr, source: str, depth: int) -> None:
        value = stmt.value
        if isinstance(value, ast.Constant):
            return  # a docstring
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in self.checks
                and not value.keywords):
            self.call_check(self.checks[value.func.id], value, source, depth)
            return
        raise UnsupportedTest(f"{source[:120]!r}: a statement that is not an assert would run in the sample's "
                              "process, where the sample decides its outcome")

    def call_check(self, fn: ast.FunctionDef, call: ast.Call, source: str, depth: int) -> None:
        """`check(f)`: the body of `def check(candidate)` planned with `f` for `candidate`."""
        args = fn.args
        params = [a.arg for a in args.args]
        if (args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg or args.defaults
                or len(params) != len(call.args) or any(isinstance(a, ast.Starred) for a in call.args)):
            raise UnsupportedTest(f"{source[:120]!r}: only a plain call of a test function is planned")
        if _bound_by(ast.Module(body=fn.body, type_ignores=[])) & set(params):
            raise UnsupportedTest(f"{source[:120]!r}: the test function rebinds its parameters")
        self.called.add(fn.name)
        aliases: dict[str, ast.expr] = {}
        for param, arg in zip(params, call.args):
            if isinstance(arg, ast.Name) and self.is_sample(arg.id):
                aliases[param] = arg
            elif not _remote_parts(arg, self.bound):
                self.bind((param,), (self.compute(arg, source),), f"{param} = {ast.unparse(arg)}")
            else:
                raise UnsupportedTest(f"{source[:120]!r}: a test function called with the sample's values")
        body = copy.deepcopy(fn.body)
        for stmt in body:
            for node in list(ast.walk(stmt)):
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.Name) and child.id in aliases:
                        _swap(node, child, ast.Name(id=aliases[child.id].id, ctx=child.ctx))  # type: ignore
        self.block(body, depth + 1)

    def branch(self, stmt: ast.If, source: str, depth: int) -> None:
        test = stmt.test
        main = (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
                and {ast.dump(test.left), ast.dump(test.comparators[0])} ==
                {ast.dump(ast.Name("__name__", ast.Load())), ast.dump(ast.Constant("__main__"))})
        if main:
            self.block(stmt.body, depth + 1)  # the tests run as a script
            return
        if _remote_parts(test, self.bound):
            raise UnsupportedTest(f"{source[:120]!r}: a condition over the sample's values would decide which "
                                  "asserts run")
        self.block(stmt.body if self.compute(test, source) else stmt.orelse, depth + 1)

    def loop(self, stmt: ast.For, source: str, depth: int) -> None:
        target = stmt.target
        simple = isinstance(target, ast.Name) or (
            isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in target.elts))
        jumps = any(isinstance(n, (ast.Break, ast.Continue)) for s in stmt.body for n in ast.walk(s))
        if not simple or stmt.orelse or jumps or _remote_parts(stmt.iter, self.bound):
            raise UnsupportedTest(f"{source[:120]!r}: a loop that is not over the tests' own values, or not "
                                  "plain, would run in the sample's process")
        items = self.compute(stmt.iter, source)
        try:
            items = list(items)
        except TypeError as exc:
            raise UnsupportedTest(f"{source[:120]!r}: the loop's value is not iterable") from exc
        if len(items) > MAX_UNROLL:
            raise UnsupportedTest(f"{source[:120]!r}: a loop over more than {MAX_UNROLL} items is not unrolled")
        names = ((target.id,) if isinstance(target, ast.Name) else
                 tuple(e.id for e in target.elts))  # type: ignore[union-attr]
        for item in items:
            if len(names) == 1 and isinstance(target, ast.Name):
                values: tuple[Any, ...] = (item,)
            else:
                values = tuple(item) if isinstance(item, (list, tuple, str, WireSet, WireDict, range)) else ()
                if len(values) != len(names):
                    raise UnsupportedTest(f"{source[:120]!r}: cannot unpack a loop item here")
            self.bind(names, values, f"{ast.unparse(target)} = {_literal_source(item)[:200]}")
            self.block(copy.deepcopy(stmt.body), depth + 1)


def plan_tests(tests: list[str]) -> list[Step]:
    """Parse the test statements; raise UnsupportedTest for one the trusted side cannot check."""
    planner = _Planner()
    for text in tests:
        try:
            module = ast.parse(text)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            raise UnsupportedTest(f"test {text[:80]!r} is not valid Python ({type(exc).__name__})") from exc
        try:
            planner.block(module.body, 0)
        except RecursionError as exc:
            raise UnsupportedTest(f"test {text[:80]!r} is nested too deeply to plan") from exc
    unused = set(planner.checks) - planner.called
    if unused:
        raise UnsupportedTest(f"asserts inside {', '.join(sorted(unused))!r}, a function the tests never call")
    if not any(step.kind == "assert" for step in planner.steps):
        raise UnsupportedTest("the tests hold no assert that is checked")
    return planner.steps


def _guard(value: Any) -> Any:
    if isinstance(value, Opaque):
        raise CheckFailed(f"a {value.type_name} object is not plain data")
    if type(value) is int and value.bit_length() > _MAX_INT_BITS:
        raise CheckFailed("an integer too large to check")
    if type(value) is range and len(value) > _MAX_ITEMS:
        raise CheckFailed("a range too long to check")
    if isinstance(value, (str, bytes, list, tuple, set, frozenset, dict, WireSet, WireDict, deque)) and \
            len(value) > _MAX_ITEMS:
        raise CheckFailed("a value too large to check")
    return value


class Evaluator:
    """Evaluates asserts here; `remote(source)` returns the sample's decoded value for a sub-expression."""

    def __init__(self, remote: Callable[[str], Any]) -> None:
        self.remote = remote
        self.bindings: dict[str, Any] = {}
        self.seen: list[tuple[str, Any]] = []  # the sample's values in the last check, for the message

    def bind(self, step: Step) -> None:
        """Names the tests keep here take the values computed when the tests were planned."""
        self.bindings.update(zip(step.targets, step.values))

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
        if isinstance(node, ast.Set):  # never hashes the sample's values (tasks/verify/sandbox/wire.py)
            return make_set(ev(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return make_dict((ev(k), ev(v)) for k, v in zip(node.keys, node.values))  # type: ignore[arg-type]
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
    numbers = (int, float, complex, bool, Fraction, Decimal)
    if isinstance(left, numbers) and isinstance(right, numbers):
        if isinstance(op, ast.Pow) and (isinstance(left, (Fraction, Decimal)) or isinstance(right, (Fraction, Decimal))):
            raise CheckFailed("a power of a Fraction or Decimal is not checked here")
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
