"""Revocation does not depend on a best-effort bump (app.cache.store, app.auth.session_memory).

Two apps on one database stand for two server workers. Worker B reaches the test's redis-server
directly; worker A through `Partition`, a TCP proxy the test can cut, so that A's commands time
out after CACHE_TIMEOUT_MS (a real fault: a network partition of A alone) while B's reads are
answered. B remembers a session; A revokes it (logout, demotion) while its bump cannot land;
the next request to B with the old token must be refused:

- the fault heals while A's request retries its bump: the bump lands before A answers;
- the fault lasts: A answers only after every process's memory of the session has run out, and
  the bump is replayed in the background (as a global bump) once the fault heals.

And counters start at random values in every store, so a counter evicted (or lost) does not come
back to a value that a remembered session was verified under.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

import app.cache.store as store
from app.auth.session_memory import TRUST_SECONDS, SessionMemory
from app.cache.backends import CacheBackend, DiskBackend, MemoryBackend, RedisBackend
from app.cache.store import GLOBAL_GENERATION, ResponseCache, auth_generation
from app.models import Role
from app.services import sessions
from app.services.context import session_memory
from tests.conftest import Account, side_app
from tests.conftest import test_settings as settings_for
from tests.reliability.helpers import RedisServer, running_redis

TIMEOUT = 0.05  # CACHE_TIMEOUT_MS, the default
HEAL_AFTER = 0.3  # seconds: a fault shorter than a revoking write's patience
Headers = dict[str, str]


class _Link:
    """One client connection through the proxy, and its connection to the server."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.sockets = (client, server)
        self.broken = False  # bytes were swallowed: the stream can no longer be trusted
        self._closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked reading it
            sock.close()


class Partition:
    """A TCP proxy between one app and the redis-server. `cut()`: whatever either side sends is
    swallowed, so the app's commands time out as across a network partition (other clients of
    the server are not affected). `heal()`: forwarded again; the connections that lost bytes are
    closed (the app's client reconnects, as after any timeout)."""

    def __init__(self, server_port: int) -> None:
        self._server_port = server_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so that the accepting thread sees `close`
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        with self._lock:
            broken = [link for link in self._links if link.broken]
        for link in broken:
            link.close()
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            server = socket.create_connection(("127.0.0.1", self._server_port))
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            for source, target in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(link, source, target), daemon=True
                ).start()

    def _pump(self, link: _Link, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self._cut.is_set():
                    link.broken = True
                if not link.broken:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            link.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
def partition(redis_server: RedisServer) -> Iterator[Partition]:
    proxy = Partition(redis_server.port)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def workers(
    app: APIFlask, redis_server: RedisServer, partition: Partition
) -> Iterator[tuple[APIFlask, APIFlask]]:
    """(A, B): A reaches Redis through the partition, B directly; one database."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    through_partition = settings_for(url, redis_url=partition.url, cache_backend="redis")
    direct = settings_for(url, redis_url=redis_server.url, cache_backend="redis")
    with side_app(through_partition) as worker_a, side_app(direct) as worker_b:
        yield worker_a, worker_b


def log_in(client: FlaskClient, account: Account) -> Headers:
    response = client.post(
        "/login", json={"username": account.username, "password": account.password}
    )
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def remembered_role(worker: APIFlask, headers: Headers) -> Role | None:
    """The role `worker` remembers for the session of this Authorization header."""
    with worker.app_context():
        claims = sessions.decode_access_token(headers["Authorization"].removeprefix("Bearer "))
        memory = session_memory()
        assert memory is not None
        return memory.last_role(claims.user_id, claims.family_id)


def timed(call: Callable[[], object]) -> tuple[object, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_logout_whose_bump_fails_at_first_ends_the_session_in_the_other_worker(
    workers: tuple[APIFlask, APIFlask],
    redis_server: RedisServer,
    partition: Partition,
    alice: Account,
) -> None:
    worker_a, worker_b = workers
    a, b = worker_a.test_client(), worker_b.test_client()
    headers = log_in(a, alice)
    assert b.get("/tasks", headers=headers).headers["X-Cache"] == "MISS"
    assert b.get("/tasks", headers=headers).headers["X-Cache"] == "HIT"
    assert remembered_role(worker_b, headers) == Role.USER
    direct = redis_server.client()
    counter_before = direct.get(auth_generation(alice.id))

    partition.cut()
    threading.Timer(HEAL_AFTER, partition.heal).start()
    logout, took = timed(lambda: a.post("/logout", headers=headers))
    assert getattr(logout, "status_code", None) == 204

    refused = b.get("/tasks", headers=headers)
    assert refused.status_code == 401, "worker B accepted a session logged out in worker A"
    assert "revoked" in refused.json["description"]
    # Refused because the bump landed (A retried it until the fault healed, and answered
    # then), not because B's memory of the session ran out.
    assert direct.get(auth_generation(alice.id)) != counter_before
    assert HEAL_AFTER <= took < TRUST_SECONDS, f"the logout took {took:.2f}s"


def test_a_demotion_whose_bump_cannot_land_applies_in_the_other_worker_once_answered(
    workers: tuple[APIFlask, APIFlask],
    redis_server: RedisServer,
    partition: Partition,
    make_user: Callable[..., Account],
) -> None:
    worker_a, worker_b = workers
    a, b = worker_a.test_client(), worker_b.test_client()
    boss_headers = log_in(a, make_user("boss", Role.ADMIN))
    deputy = make_user("deputy", Role.ADMIN)
    deputy_headers = log_in(b, deputy)
    assert b.get("/admin/dashboard", headers=deputy_headers).status_code == 200
    assert remembered_role(worker_b, deputy_headers) == Role.ADMIN
    direct = redis_server.client()
    global_before = direct.get(GLOBAL_GENERATION)

    partition.cut()
    demoted, took = timed(
        lambda: a.patch(f"/admin/users/{deputy.id}", json={"role": "user"}, headers=boss_headers)
    )
    assert getattr(demoted, "status_code", None) == 200

    assert b.get("/admin/dashboard", headers=deputy_headers).status_code == 403, (
        "worker B still honoured the admin role taken away in worker A"
    )
    # A could not bump: it answered once no process trusted its memory of the session any more.
    assert took >= store.REVOCATION_PATIENCE_SECONDS > TRUST_SECONDS
    assert direct.get(GLOBAL_GENERATION) == global_before

    # Healed: A replays the bump it owes (a global bump) by itself, no request needed.
    partition.heal()
    wait_until(
        lambda: direct.get(GLOBAL_GENERATION) != global_before,
        "worker A did not replay its missed bump in the background",
    )
    assert b.get("/admin/dashboard", headers=deputy_headers).status_code == 403


def test_an_evicted_counter_does_not_bring_back_a_revoked_session(
    app: APIFlask, redis_server: RedisServer, alice: Account
) -> None:
    settings = settings_for(
        app.config["SQLALCHEMY_DATABASE_URI"], redis_url=redis_server.url, cache_backend="redis"
    )
    with side_app(settings) as worker:
        client = worker.test_client()
        headers = log_in(client, alice)
        assert client.get("/tasks", headers=headers).status_code == 200
        assert remembered_role(worker, headers) == Role.USER
        assert client.post("/logout", headers=headers).status_code == 204

        # Evicted (allkeys-lru), as if the memory had been needed for answers.
        redis_server.client().delete(auth_generation(alice.id))

        refused = client.get("/tasks", headers=headers)
        assert refused.status_code == 401, "the eviction of a counter revived a revoked session"
        assert "revoked" in refused.json["description"]


def test_an_evicted_counter_does_not_match_what_was_remembered(redis_server: RedisServer) -> None:
    """The same, below the API: remembered, bumped, evicted, read again."""
    cache = ResponseCache(RedisBackend(redis_server.url, 1.0), ttl_seconds=60)
    memory = SessionMemory(10, trust_seconds=3600)  # trust alone would never end it here
    counters = cache.counters([auth_generation(7)])
    assert counters is not None
    memory.remember(7, "family", counters, Role.USER, time.monotonic())
    assert memory.recall(7, "family", counters) == Role.USER

    cache.bump([auth_generation(7)])
    redis_server.client().delete(auth_generation(7))

    again = cache.counters([auth_generation(7)])
    assert again is not None and again != counters
    assert memory.recall(7, "family", again) is None


@pytest.fixture(params=["memory", "disk", "redis"])
def two_fresh_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[CacheBackend, CacheBackend]:
    kind = request.param
    if kind == "memory":
        return MemoryBackend(100, 60), MemoryBackend(100, 60)
    if kind == "disk":
        one, two = (DiskBackend(str(tmp_path / name), 1 << 20, 1.0) for name in ("one", "two"))
        return one, two
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisBackend(server.url, 1.0), RedisBackend(server.url.removesuffix("/0") + "/1", 1.0)


def test_counters_start_at_random_values(
    two_fresh_stores: tuple[CacheBackend, CacheBackend],
) -> None:
    names = [auth_generation(1), "gen:task:1"]
    first, second = (ResponseCache(backend, ttl_seconds=60) for backend in two_fresh_stores)
    read = first.counters(names)
    assert read is not None and b"0" not in read, "a fresh counter must not start at 0"
    assert all(int(value) > 2**20 for value in read)
    assert first.counters(names) == read  # created once, then read as stored
    other = second.counters(names)
    assert other is not None
    assert all(mine != theirs for mine, theirs in zip(read, other, strict=True))

    first.bump(["gen:scope:staff"])  # bumped before it was ever read: seeded, then bumped
    bumped = first.counters(["gen:scope:staff"])
    assert bumped is not None and int(bumped[1]) > 2**20


def test_a_write_waits_for_its_bump_then_leaves_it_to_the_background(
    redis_server: RedisServer, partition: Partition
) -> None:
    cache = ResponseCache(RedisBackend(partition.url, TIMEOUT), ttl_seconds=60)
    direct = redis_server.client()
    cache.bump([auth_generation(1), "gen:task:1"])  # healthy: lands at once
    global_before = direct.get(GLOBAL_GENERATION)

    partition.cut()
    _, answers_only = timed(lambda: cache.bump(["gen:task:1"]))
    _, revoking = timed(lambda: cache.bump([auth_generation(1)]))
    # The store has failed for longer than a blip, and the replay is running: no waiting.
    _, during_outage = timed(lambda: cache.bump(["gen:task:2"]))

    assert store.BUMP_PATIENCE_SECONDS <= answers_only < store.REVOCATION_PATIENCE_SECONDS
    assert store.REVOCATION_PATIENCE_SECONDS <= revoking < store.REVOCATION_PATIENCE_SECONDS + 0.5
    assert during_outage < 3 * TIMEOUT
    assert cache.counters(["gen:task:1"]) is None  # owes a global bump: bypassed

    partition.heal()
    wait_until(
        lambda: direct.get(GLOBAL_GENERATION) != global_before,
        "the missed bumps were not replayed in the background",
    )
