"""The runner inside the sandbox (stdlib only; see tasks/verify/sandbox/run.py for the threat model).

Started as `python -c <this file's text> <limits as JSON>` in a bubblewrap sandbox, so nothing of
the project is importable here. It lowers its own resource limits (soft = hard; unprivileged, so
they cannot be raised again), moves the request and reply pipes off stdin/stdout, then answers
`{"ready": true}`, then one reply per request line until stdin closes:

    {"op": "exec", "src": ..., "name": ...}  ->  {"ok": true}
    {"op": "eval", "src": ...}               ->  {"value": <plain data>}
    either, when the code raises             ->  {"raised": "<exception type>", "tail": "<traceback>"}

Nothing here decides whether a test passed: the trusted process compares the plain values it
decodes (tasks/verify/sandbox/checks.py). The sample's code runs in this process and can rewrite all of
it; that is expected, and gains it nothing beyond choosing the values it returns.
"""

import json
import linecache
import math
import os
import resource
import sys

_SMALL_INT = 2 ** 63


def set_limits(limits):
    mb = 1024 * 1024
    for rlimit, value in ((resource.RLIMIT_CPU, limits["cpu_seconds"]),
                          (resource.RLIMIT_AS, limits["memory_mb"] * mb),
                          (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb),
                          (resource.RLIMIT_NOFILE, 64),
                          (resource.RLIMIT_CORE, 0),
                          (resource.RLIMIT_NPROC, 0)):  # no new processes or threads (seccomp also kills them)
        # CPU: SIGXCPU at the soft limit, SIGKILL a second later if it is ignored
        resource.setrlimit(rlimit, (value, value + 1 if rlimit == resource.RLIMIT_CPU else value))


def encode(value):
    """Plain data as tagged JSON; anything else as {"opaque": type name}.

    The standard library's containers and numbers arrive as what they compare equal to: a dict
    subclass (Counter, OrderedDict, defaultdict) as a dict, a tuple subclass (a namedtuple) as a
    tuple, a list, set, str, int or float subclass as its base type, bytearray as bytes; deque,
    range, Fraction and Decimal keep their own tags."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if -_SMALL_INT < value < _SMALL_INT else {"int": hex(value)}
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind is list:
        return [encode(v) for v in value]
    if kind is tuple:
        return {"tuple": [encode(v) for v in value]}
    if kind is set or kind is frozenset:
        return {kind.__name__: [encode(v) for v in value]}
    if kind is dict:
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if kind is bytes or kind is bytearray:
        return {"bytes": bytes(value).hex()}
    if kind is complex:
        return {"complex": [encode(value.real), encode(value.imag)]}
    if kind is range:
        return {"range": [encode(value.start), encode(value.stop), encode(value.step)]}
    collections, fractions, decimal = (sys.modules.get(m) for m in ("collections", "fractions", "decimal"))
    if collections is not None and kind is collections.deque:
        return {"deque": [encode(v) for v in value]}
    if fractions is not None and kind is fractions.Fraction:
        return {"fraction": [encode(value.numerator), encode(value.denominator)]}
    if decimal is not None and kind is decimal.Decimal:
        return {"decimal": str(value)}
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in dict.items(value)]}
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in tuple.__iter__(value)]}
    if isinstance(value, list):
        return [encode(v) for v in list.__iter__(value)]
    if isinstance(value, frozenset):
        return {"frozenset": [encode(v) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"set": [encode(v) for v in set.__iter__(value)]}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return encode(int.__int__(value))
    if isinstance(value, float):
        return encode(float.__float__(value))
    return {"opaque": kind.__name__}


def raised(exc):
    try:
        import traceback  # only on the failure path: a few milliseconds off every start

        tail = "".join(traceback.format_exception(exc, limit=-3))[-4000:]
    except BaseException:  # noqa: BLE001 - out of memory, or a hostile exception type
        tail = ""
    try:
        name = type(exc).__name__
    except BaseException:  # noqa: BLE001
        name = "BaseException"
    return {"raised": name, "tail": tail}


def answer(request, namespace):
    src = request["src"]
    try:
        if request["op"] == "exec":
            name = request.get("name", "<test>")
            linecache.cache[name] = (len(src), None, src.splitlines(True), name)  # lines in tracebacks
            exec(compile(src, name, "exec"), namespace)
            return {"ok": True}
        value = eval(compile(src, "<test>", "eval"), namespace)
        return {"value": encode(value)}
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: a sample must not end the run early
        return raised(exc)


def send(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main():
    set_limits(json.loads(sys.argv[1]))
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)  # the sample reads nothing and its prints go nowhere
    os.dup2(null, 1)
    os.close(null)
    namespace = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    send(replies, b'{"ready": true}\n')  # the sandbox is up: anything that goes wrong now is the sample's
    for line in requests:
        reply = answer(json.loads(line), namespace)
        try:
            data = json.dumps(reply, ensure_ascii=True, allow_nan=False)
        except BaseException as exc:  # noqa: BLE001 - e.g. a list that contains itself
            data = json.dumps(raised(exc))
        send(replies, data.encode() + b"\n")
    os._exit(0)


if __name__ == "__main__":
    main()
