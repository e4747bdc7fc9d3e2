"""The trusted side cannot be hung or crashed by what a sample sends back (issue 27).

Attacks through the reply channel: a set or dict of integers that all hash alike (quadratic to
build as a Python set), malformed fields (hex that is not hex, a bad int, a bad decimal), deep
nesting, and replies with too many values. Each asserts what the attacker wanted did not happen:
the decode stays within a fixed time, raises nothing but WireError, and the sample is graded
`error` alone while its batch neighbours keep their verdicts.
"""

from __future__ import annotations

import json
import sys
import time

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.config.recipe import SandboxLimits
from tasks.data.schema import stable_ids
from tasks.verify.code_verifier import CodeTestsVerifier
from tasks.verify.sandbox.run import run_tests
from tasks.verify.sandbox.wire import MAX_DEPTH, MAX_NODES, WireDict, WireError, WireSet, canon, decode_reply
from tests.test_sandbox import sandbox_ready  # noqa: F401 - the fixture: fail in CI, skip elsewhere

MODULUS = 2 ** 61 - 1  # hash(n) == n % MODULUS for ints on 64-bit CPython: these all hash alike
LIMITS = SandboxLimits(cpu_seconds=4, memory_mb=512, wall_seconds=10, workers=2)
BUDGET_S = 5.0  # a full-size reply decodes well within this on a loaded two-core machine


def colliding(n: int) -> list[int]:
    return [(i + 1) * MODULUS for i in range(n)]


def reply(value: object) -> bytes:
    return json.dumps({"value": value}).encode()


def timed(line: bytes):
    """(the decoded reply, or its WireError; seconds taken)."""
    start = time.monotonic()
    try:
        out = decode_reply(line)
    except WireError as exc:
        out = exc
    return out, time.monotonic() - start


def value_of(line: bytes):
    out, seconds = timed(line)
    return (out["value"] if isinstance(out, dict) else out), seconds


# ---------------------------------------------------------------- hash-collision replies
def test_colliding_integers_hash_alike_on_this_interpreter():
    assert sys.hash_info.modulus == MODULUS
    assert len({hash(n) for n in colliding(100)}) == 1


@pytest.mark.parametrize("tag", ["set", "frozenset"])
def test_a_set_of_colliding_integers_decodes_in_bounded_time(tag):
    members = colliding(150_000)  # a Python set of these takes minutes to build
    out, seconds = value_of(reply({tag: members}))
    assert seconds < BUDGET_S, seconds
    assert isinstance(out, WireSet) and len(out) == len(members)
    assert members[-1] in out and MODULUS * 10 ** 9 not in out


def test_a_dict_with_colliding_keys_decodes_and_looks_up_in_bounded_time():
    keys = colliding(150_000)
    out, seconds = value_of(reply({"dict": [[k, 1] for k in keys]}))
    assert seconds < BUDGET_S, seconds
    assert isinstance(out, WireDict) and len(out) == len(keys)
    start = time.monotonic()
    assert all(out[k] == 1 for k in keys[:10_000])
    assert time.monotonic() - start < BUDGET_S


def test_colliding_tuples_and_floats_decode_in_bounded_time():
    floats = [float(k) for k in colliding(50_000)]
    pairs = [{"tuple": [k, -1]} for k in colliding(50_000)]
    for body in (floats, pairs):
        out, seconds = value_of(reply({"set": body}))
        assert seconds < BUDGET_S and isinstance(out, WireSet), seconds


def test_comparing_a_colliding_set_with_the_expected_set_is_bounded():
    members = colliding(100_000)
    decoded = decode_reply(reply({"set": members}))["value"]
    start = time.monotonic()
    assert decoded != {1, 2, 3} and decoded == WireSet(reversed(members))
    assert sorted(decoded)[:2] == members[:2]
    assert time.monotonic() - start < BUDGET_S


# ---------------------------------------------------------------- malformed replies: the verifier's own error
@pytest.mark.parametrize("line", [
    reply({"bytes": "zz"}), reply({"bytes": "abc"}), reply({"int": "0xq"}), reply({"int": ""}),
    reply({"decimal": "1e99999999"}), reply({"decimal": "x"}), reply({"fraction": [1, 0]}),
    reply({"range": [0, 1, 0]}), reply({"range": [0, 1]}), reply({"complex": [1, 2]}),
    reply({"dict": [[1]]}), reply({"nope": 1}), reply({"tuple": 3}),
    reply({"float": "NaN!"}), b'{"ok": false}', b'{"ready": 1}', b"[]", b"not json", b"\xff\xfe",
    b'{"raised": 1, "tail": ""}', b'{"value": 1, "extra": 2}', b"[" * 100_000 + b"]" * 100_000,
    b'{"value": ' + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"}",
])
def test_a_malformed_reply_is_a_wire_error_and_nothing_else(line):
    out, seconds = timed(line)
    assert isinstance(out, WireError)
    assert seconds < BUDGET_S


def test_a_reply_with_too_many_values_is_refused_quickly():
    out, seconds = timed(reply([0] * (MAX_NODES + 10)))
    assert isinstance(out, WireError) and seconds < BUDGET_S


# ---------------------------------------------------------------- property: any reply, bounded and only WireError
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["tuple", "set", "frozenset", "dict", "deque", "bytes", "complex", "int", "float",
                         "fraction", "decimal", "range", "opaque", "x"]), children, max_size=2),
    max_leaves=40)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(body=JSON, wrap=st.sampled_from(["value", "raised", "ok", "ready", None]))
def test_arbitrary_replies_decode_or_raise_wire_error_within_budget(body, wrap):
    line = json.dumps({wrap: body} if wrap else body).encode()
    out, seconds = timed(line)
    assert isinstance(out, (dict, WireError))
    assert seconds < 1.0
    if isinstance(out, dict) and "value" in out:
        canon(out["value"])  # every decoded value has a key: comparisons here cannot raise on it


@settings(max_examples=200, deadline=2000)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_wire_error(data):
    out, _ = timed(data)
    assert isinstance(out, (dict, WireError))


# ---------------------------------------------------------------- end to end: the real sandbox
pytestmark_sandbox = pytest.mark.usefixtures("sandbox_ready")

# The sample replaces the runner's encoder (it runs in the same process, as it may): building such a
# set would cost the sample itself quadratic time, so it sends the colliding members as a list would be.
HOSTILE_SET = ("def add(a, b):\n    return 1\nimport __main__\n"
               f"__main__.encode = lambda v: {{'set': [i * {MODULUS} for i in range(1, 150001)]}}\n")
# ... and here so that its first value reply carries a field that is not hex
HOSTILE_HEX = ("def add(a, b):\n    return b'x'\n"
               "import __main__\n__main__.encode = lambda v: {'bytes': 'zz'}\n")


@pytestmark_sandbox
def test_a_sample_returning_a_colliding_set_is_checked_within_the_wall_limit():
    start = time.monotonic()
    result = run_tests(HOSTILE_SET, ["assert add(1, 2) == {3}"], LIMITS)
    assert time.monotonic() - start < LIMITS.wall_seconds + 2
    assert result.status == "failed", result


@pytestmark_sandbox
def test_a_reply_with_a_bad_hex_field_is_that_samples_error():
    result = run_tests(HOSTILE_HEX, ["assert add(1, 2) == b'3'"], LIMITS)
    assert result.status == "error" and "unreadable reply" in result.stderr_tail, result


@pytestmark_sandbox
def test_hostile_replies_do_not_abort_the_batch_or_change_a_neighbours_grade():
    tests = json.dumps(["assert add(2, 3) == 5", "assert add(1, 1) == 2"])
    df = pl.DataFrame({"text": ["task"], "answer": [tests]})
    prompts = df.with_columns(stable_ids(df["text"]))
    pid = prompts["prompt_id"][0]
    texts = [f"```python\n{HOSTILE_HEX}\n```", "```python\ndef add(a, b):\n    return a + b\n```",
             f"```python\n{HOSTILE_SET}\n```", "```python\ndef add(a, b):\n    return a - b\n```"]
    samples = pl.DataFrame({"prompt_id": [pid] * 4, "sample_idx": list(range(4)), "text": texts},
                           schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String})
    start = time.monotonic()
    out = CodeTestsVerifier(LIMITS).verify(samples, prompts)
    assert time.monotonic() - start < 2 * LIMITS.wall_seconds + 5
    assert out["extracted_answer"].to_list() == ["error", "passed", "failed", "failed"]
    assert out["correct"].to_list() == [False, True, False, False]
