"""Generated request ids: 32 hex digits, and a forked child does not repeat its parent's."""

from __future__ import annotations

import os
import re

from app.observability.logging import request_id_from

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def test_generated_ids_are_32_hex_digits_and_distinct() -> None:
    ids = [request_id_from(None) for _ in range(10_000)]
    assert all(HEX_ID.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_makes_ids_of_its_own() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write_end, " ".join(request_id_from(None) for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parent_ids = [request_id_from(None) for _ in range(5)]
    with os.fdopen(read_end) as pipe:
        child_ids = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(child_ids) == 5 and all(HEX_ID.match(i) for i in child_ids)
    # Without the reseed after fork both would draw the same sequence from the same state.
    assert not set(child_ids) & set(parent_ids)
