"""The Redis backend's one-round-trip lookup (a Lua script) on a real redis-server: the same
answer as reading the counters and then the entry, counters that start at random values (read or
bumped first), and a server that lost its scripts or its data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.cache.backends import (
    CacheBackend,
    CacheUnavailable,
    DiskBackend,
    MemoryBackend,
    RedisBackend,
    versioned,
)
from app.cache.store import GLOBAL_GENERATION
from tests.reliability.helpers import RedisServer, running_redis

COUNTERS = [GLOBAL_GENERATION, "gen:scope:staff", "gen:auth:7"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as redis_server:
        yield redis_server


@pytest.fixture
def backend(server: RedisServer) -> RedisBackend:
    return RedisBackend(server.url, 1.0)


def test_every_missing_counter_is_seeded_not_started_at_zero(backend: RedisBackend) -> None:
    values, entry = backend.lookup(COUNTERS, "resp:x", versioned_by=2)
    assert entry is None
    assert all(int(v) > 2**20 for v in values), "a lost counter must not count again from 0"
    assert len(set(values)) == len(values)  # each drawn on its own
    assert backend.get_many(COUNTERS) == values  # stored, and stable
    again, _ = backend.lookup(COUNTERS, "resp:x", versioned_by=2)
    assert again == values
    assert backend.counters(COUNTERS) == values


def test_counters_read_alone_are_seeded_too(backend: RedisBackend) -> None:
    values = backend.counters(["gen:task:1", "gen:task:1", "gen:task:2"])
    assert values[0] == values[1], "a counter named twice is created once"
    assert all(int(v) > 2**20 for v in values) and values[0] != values[2]
    assert backend.lookup(["gen:task:2", "gen:task:1"], "resp:x", 1)[0] == [values[2], values[0]]


def test_the_entry_is_the_one_under_the_current_counters(backend: RedisBackend) -> None:
    values, _ = backend.lookup(COUNTERS, "resp:x", versioned_by=2)
    backend.set(versioned("resp:x", values[:2]), b"answer", 60)
    assert backend.lookup(COUNTERS, "resp:x", versioned_by=2) == (values, b"answer")

    backend.incr_many(["gen:auth:7"])  # read along, not part of the key
    bumped, entry = backend.lookup(COUNTERS, "resp:x", versioned_by=2)
    assert entry == b"answer" and int(bumped[2]) == int(values[2]) + 1

    backend.incr_many(["gen:scope:staff"])  # part of the key: the entry is out of reach
    assert backend.lookup(COUNTERS, "resp:x", versioned_by=2)[1] is None


def test_redis_and_the_in_process_stores_agree(backend: RedisBackend, tmp_path: Path) -> None:
    stores: list[CacheBackend] = [
        backend,
        MemoryBackend(100, 60),
        DiskBackend(str(tmp_path / "disk"), 1 << 20, 1.0),
    ]
    seen = []
    for store in stores:
        store.incr_many(["gen:scope:staff"])  # a bump of a missing counter seeds it first
        seeds = store.counters(COUNTERS)
        store.incr_many([GLOBAL_GENERATION, "gen:scope:staff"])
        values, _ = store.lookup(COUNTERS, "resp:y", versioned_by=3)
        store.set(versioned("resp:y", values[:3]), b"kept", 60)
        again, entry = store.lookup(COUNTERS, "resp:y", versioned_by=3)
        assert (again, entry) == (values, b"kept")
        assert [int(v) - int(s) for v, s in zip(values, seeds, strict=True)] == [1, 1, 0]
        assert all(int(v) > 2**20 for v in seeds), store.name
        seen.append(seeds[1])
    assert len(set(seen)) == len(seen), "every store draws its own start"


def test_a_server_that_lost_its_scripts_or_its_data_still_answers(
    server: RedisServer, backend: RedisBackend
) -> None:
    before, _ = backend.lookup(COUNTERS, "resp:z", versioned_by=2)
    server.client().script_flush()
    assert backend.lookup(COUNTERS, "resp:z", versioned_by=2)[0] == before

    server.client().flushdb()
    after, entry = backend.lookup(COUNTERS, "resp:z", versioned_by=2)
    assert entry is None and after[0] != before[0]


def test_a_bump_of_a_lost_counter_seeds_it_first(
    server: RedisServer, backend: RedisBackend
) -> None:
    server.client().flushdb()
    backend.incr_many([GLOBAL_GENERATION, "gen:auth:7"])
    assert all(int(v or 0) > 2**20 for v in backend.get_many([GLOBAL_GENERATION, "gen:auth:7"]))


def test_a_stored_entry_has_its_time_to_live_for_every_client(
    backend: RedisBackend, server: RedisServer
) -> None:
    """The thread's commands on its one connection each read their own reply, and the entry,
    with its time to live, is there for every other client."""
    for n in range(50):
        backend.set(f"resp:k{n}", f"value {n}".encode(), 60)
    assert backend.get_many(["resp:k0", "resp:k49", "resp:none"]) == [b"value 0", b"value 49", None]
    other = redis.Redis.from_url(server.url)
    assert other.get("resp:k7") == b"value 7"
    assert 0 < other.ttl("resp:k7") <= 60


def test_a_set_to_a_dead_server_is_reported(backend: RedisBackend, server: RedisServer) -> None:
    backend.set("resp:before", b"x", 60)
    server.kill()
    with pytest.raises(CacheUnavailable):
        backend.set("resp:after", b"x", 60)
