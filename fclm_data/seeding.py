"""Seeded, platform-independent randomness: every choice is a hash of (seed, names, key).

Python's ``hash`` is salted per process and ``random`` streams depend on call order, so a
parallel or resumed build would draw differently. Hashing the build seed with the sample key makes
each choice a pure function of its inputs: any worker, any order, same bytes.
"""

from __future__ import annotations

import hashlib


def stable_hash(*parts: object) -> int:
    """64-bit hash of the parts' ``str`` forms, joined with an unambiguous separator."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def stable_index(n: int, *parts: object) -> int:
    """Index in ``range(n)`` drawn from the parts."""
    if n <= 0:
        raise ValueError("cannot choose from an empty range")
    return stable_hash(*parts) % n


def stable_uniform(*parts: object) -> float:
    """Float in [0, 1) drawn from the parts."""
    return stable_hash(*parts) / 2.0**64
