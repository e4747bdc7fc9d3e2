"""Honest code passes (issue 27): a false rejection is a failure of this test.

A corpus of correct solutions in the shapes of MBPP and HumanEval: every standard container and
number type a real solution returns (Counter, defaultdict, OrderedDict, deque, namedtuple,
Fraction, Decimal, frozenset, bytes, range, nested combinations), objects compared through
`str(...)`/`repr(...)`, and the usual techniques (recursion, lru_cache, heapq, bisect, re,
itertools, classes, printing, a second of CPU). All of them run in one verifier batch, and the test
reports every false rejection at once.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from tasks.config.recipe import SandboxLimits
from tasks.data.schema import stable_ids
from tasks.verify.code_verifier import CodeTestsVerifier
from tests.test_sandbox import sandbox_ready  # noqa: F401 - the fixture: fail in CI, skip elsewhere

pytestmark = pytest.mark.usefixtures("sandbox_ready")
LIMITS = SandboxLimits(cpu_seconds=5, memory_mb=512, wall_seconds=15, workers=2)

CORPUS: dict[str, tuple[str, list[str]]] = {
    # MBPP reference shapes: Counter and defaultdict returned as they are
    "counter": ("from collections import Counter\ndef count_chars(s):\n    return Counter(s)\n",
                ["assert count_chars('abca') == {'a': 2, 'b': 1, 'c': 1}", "assert count_chars('')  == {}",
                 "assert count_chars('zz')['z'] == 2", "assert len(count_chars('abc')) == 3"]),
    "defaultdict": ("from collections import defaultdict\ndef group(pairs):\n    d = defaultdict(list)\n"
                    "    for k, v in pairs:\n        d[k].append(v)\n    return d\n",
                    ["assert group([('a', 1), ('b', 2), ('a', 3)]) == {'a': [1, 3], 'b': [2]}",
                     "assert 'a' in group([('a', 1)])"]),
    "ordereddict": ("from collections import OrderedDict\ndef first_seen(xs):\n    d = OrderedDict()\n"
                    "    for x in xs:\n        d.setdefault(x, len(d))\n    return d\n",
                    ["assert first_seen('abca') == {'a': 0, 'b': 1, 'c': 2}",
                     "assert list(first_seen('cab')) == ['c', 'a', 'b']"]),
    "deque": ("from collections import deque\ndef rotate(xs, k):\n    d = deque(xs)\n    d.rotate(k)\n    return d\n",
              ["assert list(rotate([1, 2, 3], 1)) == [3, 1, 2]", "assert len(rotate([], 2)) == 0"]),
    "namedtuple": ("from collections import namedtuple\nPoint = namedtuple('Point', 'x y')\n"
                   "def mid(a, b):\n    return Point((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)\n",
                   ["assert mid((0, 0), (2, 4)) == (1.0, 2.0)", "assert mid((0, 0), (2, 4)).y == 2",
                    "assert mid((0, 0), (2, 2))[0] == 1"]),
    "fraction": ("from fractions import Fraction\ndef harmonic(n):\n    return sum(Fraction(1, k) for k in range(1, n + 1))\n",
                 ["assert harmonic(2) == 1.5", "assert harmonic(3) > 1.8", "assert str(harmonic(3)) == '11/6'"]),
    "decimal": ("from decimal import Decimal\ndef money(a, b):\n    return Decimal(a) + Decimal(b)\n",
                ["assert money('0.10', '0.20') == 0.5 - 0.2 or money('0.10', '0.20') == 0.3 or True",
                 "assert str(money('0.10', '0.20')) == '0.30'", "assert money('1', '2') == 3"]),
    "frozenset": ("def pairs(xs):\n    return {frozenset((a, b)) for a in xs for b in xs if a < b}\n",
                  ["assert pairs([1, 2, 3]) == {frozenset({1, 2}), frozenset({1, 3}), frozenset({2, 3})}",
                   "assert frozenset({1, 2}) in pairs([2, 1])"]),
    "bytes": ("def xor(a, b):\n    return bytes(x ^ y for x, y in zip(a, b))\n",
              ["assert xor(b'ab', b'  ') == b'AB'", "assert len(xor(b'', b'')) == 0"]),
    "bytearray": ("def up(b):\n    return bytearray(b.upper())\n", ["assert up(b'ab') == b'AB'"]),
    "range": ("def evens(n):\n    return range(0, n, 2)\n",
              ["assert list(evens(7)) == [0, 2, 4, 6]", "assert evens(4) == range(0, 4, 2)", "assert 4 in evens(6)"]),
    "nested": ("from collections import Counter, defaultdict\ndef index(words):\n    d = defaultdict(set)\n"
               "    for i, w in enumerate(words):\n        d[w[0]].add((i, w))\n"
               "    return {k: sorted(v) for k, v in d.items()}, Counter(len(w) for w in words)\n",
               ["assert index(['ab', 'ac', 'b']) == ({'a': [(0, 'ab'), (1, 'ac')], 'b': [(2, 'b')]}, {2: 2, 1: 1})"]),
    "set_of_tuples": ("def sym(xs):\n    return {(a, b) for a, b in xs if (b, a) in xs}\n",
                      ["assert sym([(1, 2), (2, 1), (3, 4)]) == {(1, 2), (2, 1)}",
                       "assert set(sym([(1, 2), (2, 1)])) == {(2, 1), (1, 2)}"]),
    "dict_of_sets": ("def graph(edges):\n    g = {}\n    for a, b in edges:\n        g.setdefault(a, set()).add(b)\n"
                     "    return g\n", ["assert graph([(1, 2), (1, 3)]) == {1: {2, 3}}", "assert graph([(1, 2)])[1] == {2}"]),
    "subclass_int": ("import enum\nclass Color(enum.IntEnum):\n    RED = 1\ndef red():\n    return Color.RED\n",
                     ["assert red() == 1"]),
    "mixed_numbers": ("def avg(xs):\n    return sum(xs) / len(xs)\n",
                      ["assert avg([1, 2]) == 1.5", "assert avg([2, 2]) == 2", "assert {avg([2, 2])} == {2}"]),
    # objects compared through str()/repr(): the sample's own text
    "str_of_object": ("class Node:\n    def __init__(self, v):\n        self.v = v\n"
                      "    def __str__(self):\n        return f'Node({self.v})'\n    __repr__ = __str__\n"
                      "def make(v):\n    return Node(v)\n",
                      ["assert str(make(3)) == 'Node(3)'", "assert repr(make(4)) == 'Node(4)'",
                       "assert str([make(1)][0]) == 'Node(1)'"]),
    "str_of_list": ("def extract(s):\n    return [w.strip('\"') for w in s.split(', ')]\n",
                    ["assert str(extract('\"Python\", \"PHP\"')) == \"['Python', 'PHP']\""]),
    "str_of_counter": ("from collections import Counter\ndef c(s):\n    return Counter(s)\n",
                       ["assert str(c('aab')) == \"Counter({'a': 2, 'b': 1})\""]),
    # expected values the tests build from their own imports (built on the trusted side)
    "counter_expected": ("from collections import Counter\ndef count_chars(s):\n    return Counter(s)\n",
                         ["from collections import Counter", "assert count_chars('abca') == Counter({'a': 2, 'b': 1, 'c': 1})",
                          "assert count_chars('aab') == Counter('aba')"]),
    "fraction_expected": ("from fractions import Fraction\ndef harmonic(n):\n"
                          "    return sum(Fraction(1, k) for k in range(1, n + 1))\n",
                          ["from fractions import Fraction", "assert harmonic(3) == Fraction(11, 6)",
                           "assert harmonic(2) == Fraction('3/2')"]),
    "decimal_expected": ("from decimal import Decimal\ndef money(a, b):\n    return Decimal(a) + Decimal(b)\n",
                         ["from decimal import Decimal", "assert money('0.10', '0.20') == Decimal('0.30')"]),
    "deque_expected": ("from collections import deque\ndef rotate(xs, k):\n    d = deque(xs)\n    d.rotate(k)\n"
                       "    return d\n", ["from collections import deque", "assert rotate([1, 2, 3], 1) == deque([3, 1, 2])"]),
    "ordered_expected": ("from collections import OrderedDict\ndef first_seen(xs):\n    d = OrderedDict()\n"
                         "    for x in xs:\n        d.setdefault(x, len(d))\n    return d\n",
                         ["from collections import OrderedDict as OD",
                          "assert first_seen('abca') == OD([('a', 0), ('b', 1), ('c', 2)])"]),
    # techniques
    "recursion": ("def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
                  ["assert fib(10) == 55", "assert fib(20) == 6765"]),
    "lru_cache": ("from functools import lru_cache\n@lru_cache(maxsize=None)\ndef ways(n):\n"
                  "    return 1 if n <= 1 else ways(n - 1) + ways(n - 2)\n", ["assert ways(80) == 37889062373143906"]),
    "heapq": ("import heapq\ndef largest(xs, n):\n    return heapq.nlargest(n, xs)\n",
              ["assert largest([25, 35, 22, 85, 14, 65, 75, 22, 58], 3) == [85, 75, 65]"]),
    "bisect": ("import bisect\ndef left(xs, x):\n    return bisect.bisect_left(xs, x)\n",
               ["assert left([1, 2, 4, 5], 6) == 4", "assert left([1, 2, 4, 5], 3) == 2"]),
    "re": ("import re\ndef text_match(t):\n    return 'Found a match!' if re.search(r'ab*?', t) else 'Not matched!'\n",
           ["assert text_match('ac') == 'Found a match!'", "assert text_match('dc') == 'Not matched!'"]),
    "itertools": ("import itertools\ndef combos(xs, k):\n    return list(itertools.combinations(xs, k))\n",
                  ["assert combos([1, 2, 3], 2) == [(1, 2), (1, 3), (2, 3)]"]),
    "class_input": ("class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
                    "def max_chain_length(arr, n):\n    arr = sorted(arr, key=lambda p: p.b)\n    last, count = None, 0\n"
                    "    for p in arr:\n        if last is None or p.a > last:\n            count, last = count + 1, p.b\n"
                    "    return count\n",
                    ["assert max_chain_length([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)], 4) == 3"]),
    "printing": ("def shout(s):\n    print('debug', s)\n    import sys\n    print(s, file=sys.stderr)\n    return s.upper()\n",
                 ["assert shout('hi') == 'HI'"]),
    "cpu_second": ("def count_primes(n):\n    sieve = [True] * n\n    for i in range(2, int(n ** 0.5) + 1):\n"
                   "        if sieve[i]:\n            sieve[i*i::i] = [False] * len(range(i*i, n, i))\n"
                   "    s = 0\n    for _ in range(3):\n        s = sum(1 for i in range(2, n) if sieve[i])\n    return s\n",
                   ["assert count_primes(2_000_000) == 148933"]),
    "big_set": ("def squares(n):\n    return {i * i for i in range(n)}\n",
                ["assert len(squares(100000)) == 100000", "assert 81 in squares(10)", "assert squares(3) == {0, 1, 4}"]),
    # HumanEval shape
    "humaneval": ("def has_close_elements(numbers, threshold):\n    s = sorted(numbers)\n"
                  "    return any(b - a < threshold for a, b in zip(s, s[1:]))\n",
                  ['METADATA = {"author": "jt", "dataset": "test"}\n\n\ndef check(candidate):\n'
                   "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
                   "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
                   "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True\n",
                   "check(has_close_elements)"]),
    # MBPP test_setup_code shape
    "mbpp_setup": ("def total(xs):\n    return sum(p.v for p in xs)\n",
                   ["class Box:\n    def __init__(self, v):\n        self.v = v\nboxes = [Box(1), Box(2)]",
                    "assert total(boxes) == 3", "assert total([Box(5)]) == 5"]),
}


def test_every_honest_solution_in_the_corpus_passes():
    names = list(CORPUS)
    df = pl.DataFrame({"text": names, "answer": [json.dumps(CORPUS[n][1]) for n in names]})
    prompts = df.with_columns(stable_ids(df["text"]))
    samples = pl.DataFrame({"prompt_id": prompts["prompt_id"], "sample_idx": [0] * len(names),
                            "text": [f"```python\n{CORPUS[n][0]}```" for n in names]},
                           schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String})
    out = CodeTestsVerifier(LIMITS).verify(samples, prompts)
    rejected = {name: status for name, status in zip(names, out["extracted_answer"]) if status != "passed"}
    assert not rejected, f"false rejections ({len(rejected)} of {len(names)}): {rejected}"
