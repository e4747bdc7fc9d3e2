"""Test planning that cannot be gamed (issue 27): whatever the trusted side cannot check is refused.

Each attack is a wrong `add` (or one that returns an object equal to everything, or one that reads
the tests' own values) against a test shape that used to run inside the sample's process, never
run, or resolve a name in the sample's namespace; each asserts that no wrong solution is graded
correct. Supported dataset shapes (HumanEval's `check(candidate)`, MBPP's `test_setup_code`, loops
over literals, `if __name__ == "__main__":`) are checked here and still pass honest code.
"""

from __future__ import annotations

import ast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.config.recipe import SandboxLimits
from tasks.verify.sandbox.checks import CheckFailed, Evaluator, UnsupportedTest, plan_tests
from tasks.verify.sandbox.run import run_tests
from tasks.verify.sandbox.wire import Opaque
from tests.test_sandbox import sandbox_ready  # noqa: F401 - the fixture: fail in CI, skip elsewhere

LIMITS = SandboxLimits(cpu_seconds=2, memory_mb=256, wall_seconds=8)
HONEST = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
ALWAYS_EQUAL = ("class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
                "    def __bool__(self):\n        return True\n"
                "def add(a, b):\n    return Yes()\n")
READS_EXPECTED = ("def add(a, b):\n    g = globals()\n"
                  "    return next((v for k, v in g.items() if k in ('want', 'expected', 'c')), 0)\n")
# rebinds what the tests might resolve in its namespace
SHADOWS = ("class math:\n    factorial = staticmethod(lambda n: 0)\n"
           "class collections:\n    Counter = staticmethod(lambda *a: 0)\n"
           "def check(candidate):\n    pass\n"
           "AssertionError = Exception\n" + WRONG)

HUMANEVAL = ['METADATA = {"author": "x", "dataset": "test"}\n\n\ndef check(candidate):\n'
             '    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0, "zero"\n'
             '    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-6\n    assert True, "always"\n'
             '    for x in range(3):\n        assert candidate(x, x) == 2 * x\n',
             "check(add)"]
MAIN_GUARD = ['if __name__ == "__main__":\n    assert add(2, 3) == 5\n    assert add(1, 1) == 2']
LOOP = ["for a, b, c in [(2, 3, 5), (10, 20, 30), (-7, 7, 0)]:\n    assert add(a, b) == c"]
BOUND = ["want = 5", "expected = [5, 30]", "assert add(2, 3) == want", "assert [add(2, 3), add(10, 20)] == expected"]
MATH_NO_IMPORT = ["assert add(3, 3) == math.factorial(3)", "assert add(1, 1) == math.gcd(4, 6)"]
MBPP_SETUP = ["import math\nclass Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b",
              "assert add(Pair(1, 2).a, 4) == 5", "assert add(math.floor(2.5), 3) == 5"]
# expected values of standard-library types: built here from the tests' own import, never in the sample
CONSTRUCTED = ["from collections import Counter, OrderedDict, deque, defaultdict\nfrom fractions import Fraction\n"
               "from decimal import Decimal",
               "assert add(Fraction(1, 2), Fraction(1, 3)) == Fraction(5, 6)",
               "assert add(Decimal('0.1'), Decimal('0.2')) == Decimal('0.3')",
               "assert Counter(add('ab', 'a')) == Counter({'a': 2, 'b': 1})",
               "assert deque(add([1], [2])) == deque([1, 2])",
               "assert add({}.get('x', 1), 1) == OrderedDict([('a', 2)])['a'] == defaultdict(list, a=2)['a']"]
SUPPORTED = [HUMANEVAL, MAIN_GUARD, LOOP, BOUND, MATH_NO_IMPORT, MBPP_SETUP, CONSTRUCTED]
SHAPES = ["humaneval", "main_guard", "loop", "bound", "math", "mbpp_setup", "constructed"]
# a constant answer, with the types the tests build their expected values from patched to give it
PATCHES_TYPES = ("import collections, fractions, decimal\n"
                 "collections.Counter = collections.OrderedDict = collections.deque = lambda *a, **k: 7\n"
                 "fractions.Fraction = decimal.Decimal = lambda *a, **k: 7\n"
                 "def add(a, b):\n    return 7\n")


def run(code: str, tests: list[str]):
    return run_tests(code, tests, LIMITS)


# ---------------------------------------------------------------- supported shapes: checked here
@pytest.mark.parametrize("tests", SUPPORTED, ids=SHAPES)
def test_supported_shapes_plan_every_assert_here_and_run_no_comparison_in_the_sample(tests):
    steps = plan_tests(tests)
    asserts = [s for s in steps if s.kind == "assert"]
    assert asserts
    for step in steps:
        if step.kind == "exec":
            tree = ast.parse(step.source)
            assert not any(isinstance(n, (ast.Assert, ast.Compare)) for n in ast.walk(tree)), step.source


@pytest.mark.usefixtures("sandbox_ready")
@pytest.mark.parametrize("tests", SUPPORTED, ids=SHAPES)
@pytest.mark.parametrize("code", [WRONG, ALWAYS_EQUAL, READS_EXPECTED, SHADOWS, PATCHES_TYPES],
                         ids=["wrong", "always_equal", "reads_expected", "shadows_names", "patches_types"])
def test_no_wrong_solution_passes_a_supported_shape(tests, code):
    result = run(code, tests)
    assert result.status != "passed", result


@pytest.mark.usefixtures("sandbox_ready")
@pytest.mark.parametrize("tests", SUPPORTED, ids=SHAPES)
def test_honest_code_passes_every_supported_shape(tests):
    result = run(HONEST, tests)
    assert result.passed, result.stderr_tail


def test_expected_values_of_imported_types_are_built_here():
    from fractions import Fraction

    steps = plan_tests(CONSTRUCTED)
    assert [s.kind for s in steps][:2] == ["exec", "bind"]  # the import runs in the sample and binds here
    _check_with(steps, Fraction(5, 6))  # add(...) answered by the sample, Fraction(5, 6) built here
    with pytest.raises(CheckFailed):
        _check_with(steps, 7)  # a wrong answer: whatever the sample's Fraction would have said


def _check_with(steps, answer) -> None:
    """The first assert, with the sample answering `answer` for every part it evaluates."""
    evaluator = Evaluator(remote=lambda source: answer)
    for step in steps:
        if step.kind == "bind":
            evaluator.bind(step)
        elif step.kind == "assert":
            evaluator.check(step)
            return


def test_a_counter_of_the_samples_values_is_counted_without_hashing_them():
    """Integers that all hash alike make a real Counter quadratic; the trusted one sorts instead."""
    import time

    from tasks.verify.sandbox.constructors import counter

    alike = [k * (2 ** 61 - 1) for k in range(1, 100_001)] * 2
    start = time.process_time()
    counted = counter(alike)
    assert time.process_time() - start < 10  # a dict would need ~10**10 probes
    assert len(counted) == 100_000 and counted[2 ** 61 - 1] == 2


def test_the_loop_is_unrolled_with_one_check_per_item():
    asserts = [s for s in plan_tests(LOOP) if s.kind == "assert"]
    assert [ast.unparse(s.node) for s in asserts] == ["add(2, 3) == c", "add(10, 20) == c", "add(-7, 7) == c"]


def test_the_tests_own_values_never_reach_the_sample_as_names():
    steps = plan_tests(BOUND)
    assert not [s for s in steps if s.kind == "exec"]  # nothing of the tests runs in the sample
    parts: list[str] = []
    evaluator = Evaluator(lambda src: parts.append(src) or 5)
    for step in steps:
        if step.kind == "bind":
            evaluator.bind(step)
        else:
            with pytest.raises(CheckFailed) if step.source.startswith("assert [") else _nothing():
                evaluator.check(step)
    assert parts == ["add(2, 3)", "add(2, 3)", "add(10, 20)"]  # no `want`, no `expected`


def test_a_bound_input_is_sent_as_a_literal():
    steps = plan_tests(["data = [7, 8]", "assert add(data, 1) == 3"])
    (check,) = [s for s in steps if s.kind == "assert"]
    assert ast.unparse(check.node) == "add([7, 8], 1) == 3"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- refused shapes: never run in the sample
REFUSED = [
    (["check(add)"], "not an assert"),  # a call the tests do not define: the sample's own `check`
    (["def check(candidate):\n    assert candidate(2, 3) == 5"], "never call"),
    (["add(2, 3)"], "not an assert"),
    (["print(add(2, 3) == 5)"], "not an assert"),
    (["ok = add(2, 3) == 5", "assert ok"], "comparison"),
    (["for x in add(1, 2):\n    assert x == 3"], "loop"),
    (["i = 0\nwhile i < 3:\n    assert add(i, 0) == i\n    i += 1"], "While|AugAssign"),
    (["try:\n    add('a', 1)\n    assert False\nexcept TypeError:\n    pass"], "Try"),
    (["if add(1, 1) == 2:\n    assert add(2, 3) == 5"], "condition over the sample"),
    (["for x in range(3):\n    if x:\n        break\n    assert add(x, 0) == x"], "loop"),
    (["for x in range(10 ** 6):\n    assert add(x, 0) == x"], "more than"),
    (["want = [5]", "want[0] = 7", "assert add(2, 3) == want[0]"], "in place"),
    (["want = [5]", "want.append(7)", "assert add(2, 3) == want[0]"], "not an assert"),
    (["want = 5", "def helper():\n    return want", "assert add(2, 3) == 5"], "values the tests keep here"),
    (["assert add(2, 1) == collections.Counter('ab')['a'] + 2"], "without importing"),
    (["assert add(1, 1) == 2 or re.match('a', 'a')"], "without importing"),
    (["class T:\n    def test(self):\n        assert add(1, 1) == 2"], "class"),
    (["x = 1"], "no assert"),
    (["class Box:\n    pass", "want = [Box()]", "assert add(1, 2) == want"], "not the sample's own value"),
    (["with open('f') as fh:\n    assert add(1, 1) == 2"], "With"),
]


@pytest.mark.parametrize(("tests", "reason"), REFUSED)
def test_shapes_the_trusted_side_cannot_check_are_refused(tests, reason):
    with pytest.raises(UnsupportedTest, match=reason):
        plan_tests(tests)


# ---------------------------------------------------------------- property: planned here, or refused
NAMES = st.sampled_from(["add", "x", "want", "math", "check", "candidate", "collections", "Pair"])
EXPR = st.recursive(
    st.sampled_from(["1", "'a'", "[1, 2]", "(1, 2)", "{1: 2}", "{3}", "None", "True", "2.5"]) | NAMES,
    lambda e: st.one_of(
        st.builds("{}({})".format, NAMES, e),
        st.builds("{}({}, {})".format, NAMES, e, e),
        st.builds("({} == {})".format, e, e),
        st.builds("({} + {})".format, e, e),
        st.builds("{}[0]".format, e),
        st.builds("{}.{}".format, NAMES, st.sampled_from(["factorial", "Counter", "a", "floor"])),
        st.builds("[{} for q in {}]".format, e, e),
        st.builds("sorted({})".format, e), st.builds("str({})".format, e), st.builds("set({})".format, e)),
    max_leaves=6)
STMT = st.recursive(
    st.one_of(st.builds("assert {}".format, EXPR), st.builds("{} = {}".format, NAMES, EXPR),
              st.builds("{}[0] = {}".format, NAMES, EXPR), st.builds("{}".format, EXPR),
              st.just("import math"), st.just("pass"), st.builds("def {}(candidate):\n    assert {}".format, NAMES, EXPR)),
    lambda s: st.one_of(
        st.builds(lambda v, it, b: f"for {v} in {it}:\n" + _indent(b), NAMES, EXPR, s),
        st.builds(lambda c, b: f"if {c}:\n" + _indent(b), EXPR, s),
        st.builds(lambda b: 'if __name__ == "__main__":\n' + _indent(b), s),
        st.builds(lambda b: "while x:\n" + _indent(b), s)),
    max_leaves=4)


def _indent(block: str) -> str:
    return "".join("    " + line + "\n" for line in block.splitlines())


@settings(max_examples=400, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STMT, min_size=1, max_size=5))
def test_arbitrary_test_lists_are_planned_here_or_refused(tests):
    try:
        steps = plan_tests(tests)
    except UnsupportedTest:
        return
    for step in steps:
        if step.kind == "exec":  # what runs in the sample holds no assert, and no comparison outside a def
            tree = ast.parse(step.source)
            assert not any(isinstance(n, ast.Assert) for n in ast.walk(tree)), step.source
            if not isinstance(tree.body[0], (ast.FunctionDef, ast.ClassDef)):
                assert not any(isinstance(n, ast.Compare) for n in ast.walk(tree)), step.source
    sent: list[str] = []

    def remote(src: str):  # the sample answers every part with an object that equals nothing
        sent.append(src)
        return Opaque("Yes")

    evaluator = Evaluator(remote)
    for step in steps:
        if step.kind == "bind":
            evaluator.bind(step)
        elif step.kind == "assert":
            sent.clear()
            try:
                evaluator.check(step)
            except Exception:  # noqa: BLE001 - failed or error: either way not a pass the sample decided
                pass
            for src in sent:  # parts the sample evaluates: no comparison, no name of a value kept here
                tree = ast.parse(src, mode="eval")
                assert not any(isinstance(n, ast.Compare) for n in ast.walk(tree)), src
                free = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - {
                    n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                assert not free & step.bound, src
