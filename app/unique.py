"""Random numbers that need to be unique, not secret (request ids, the seeded counter's start).

A generator seeded from the OS costs no system call per number (uuid4 and `secrets` read the
OS's random source for each). A forked child (a server or Celery worker) seeds its own again,
or it would draw its parent's numbers.
"""

from __future__ import annotations

import os
import random

_generator = random.Random()  # noqa: S311 (seeded from os.urandom; uniqueness is what counts)
os.register_at_fork(after_in_child=_generator.seed)


def unique_bits(bits: int) -> int:
    """A random non-negative integer below 2**bits."""
    return _generator.getrandbits(bits)
