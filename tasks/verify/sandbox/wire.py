"""Plain data from the sandbox: the trusted side's strict decoder of the runner's tagged JSON.

JSON's null, booleans, strings, finite numbers and arrays stand for themselves (an array is a
list); anything else is an object with exactly one tag: {"tuple": [...]}, {"set": [...]},
{"frozenset": [...]}, {"dict": [[key, value], ...]}, {"bytes": "<hex>"}, {"complex": [re, im]},
{"int": "<hex>"} (beyond 64 bits), {"float": "nan" | "inf" | "-inf"}, and {"opaque": "<type>"} for
a value that is not plain data. The encoder is `encode` in tasks/verify/sandbox/child.py.

Decoded values are built here from builtin types only, so comparing them runs no code of the
sample: an object whose `__eq__` always answers True arrives as Opaque, which equals nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MAX_REPLY_BYTES = 8 * 1024 * 1024  # one reply line; a sample's value larger than this is an error
MAX_DEPTH = 200
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class WireError(ValueError):
    """The runner's reply is not well-formed plain data."""


@dataclass(frozen=True, eq=False)
class Opaque:
    """A value that is not plain data (a generator, an object of the sample's own class, ...)."""

    type_name: str

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


def _decode(node: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if node is None or isinstance(node, (bool, str, float)):
        return node
    if isinstance(node, int):
        return node
    if isinstance(node, list):
        return [_decode(v, depth + 1) for v in node]
    if not isinstance(node, dict) or len(node) != 1:
        raise WireError(f"not a tagged value: {str(node)[:80]}")
    (tag, body), = node.items()
    try:
        if tag == "tuple":
            return tuple(_decode(v, depth + 1) for v in _list(body))
        if tag in ("set", "frozenset"):
            items = [_decode(v, depth + 1) for v in _list(body)]
            return set(items) if tag == "set" else frozenset(items)
        if tag == "dict":
            return {_decode(k, depth + 1): _decode(v, depth + 1) for k, v in (_pair(p) for p in _list(body))}
        if tag == "bytes" and isinstance(body, str):
            return bytes.fromhex(body)
        if tag == "complex":
            real, imag = (_decode(v, depth + 1) for v in _pair(body))
            if not all(isinstance(x, float) for x in (real, imag)):
                raise WireError("complex parts must be floats")
            return complex(real, imag)
        if tag == "int" and isinstance(body, str):
            return int(body, 16)
        if tag == "float" and body in _FLOATS:
            return _FLOATS[body]
        if tag == "opaque" and isinstance(body, str):
            return Opaque(body[:100])
    except TypeError as exc:  # an unhashable set member or dict key
        raise WireError(str(exc)) from exc
    raise WireError(f"unknown tag {tag[:40]!r}")


def _list(body: Any) -> list:
    if not isinstance(body, list):
        raise WireError("tagged body must be a list")
    return body


def _pair(body: Any) -> list:
    if not isinstance(body, list) or len(body) != 2:
        raise WireError("expected a pair")
    return body


def decode_reply(line: bytes) -> dict[str, Any]:
    """One reply line as {"ok": True} | {"value": decoded} | {"raised": name, "tail": text}."""
    if len(line) > MAX_REPLY_BYTES:
        raise WireError(f"reply larger than {MAX_REPLY_BYTES} bytes")
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"reply is not JSON ({type(exc).__name__})") from exc
    if not isinstance(reply, dict):
        raise WireError("reply is not an object")
    if reply == {"ok": True} or reply == {"ready": True}:
        return reply
    if set(reply) == {"value"}:
        return {"value": _decode(reply["value"], 0)}
    if set(reply) == {"raised", "tail"} and isinstance(reply["raised"], str) and isinstance(reply["tail"], str):
        return {"raised": reply["raised"][:100], "tail": reply["tail"][-4000:]}
    raise WireError("reply has unknown fields")
