"""Every random choice draws from a seed derived from (run seed, iteration, stage, shard)."""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, iteration: str | int, stage: str, shard: int = 0) -> int:
    """A stable 31-bit seed; independent of Python's hash randomisation."""
    key = f"{run_seed}/{iteration}/{stage}/{shard}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF
