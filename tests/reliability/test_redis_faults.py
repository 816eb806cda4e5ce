"""Redis failures under a running app: a real `redis-server` of the test's own is killed (SIGKILL)
or made to hang (CLIENT PAUSE, longer than the 50 ms timeout) while requests keep coming.

- Reads and writes keep working, answered from the database (X-Cache: BYPASS), each one quickly
  (a bound, with a generous margin: a request must not wait on a dead Redis, not a benchmark).
- GET /ready stays 200 with `checks.cache` "degraded"; a warning is logged.
- When Redis answers again, the cache is used again after `cache_retry_after_seconds` (MISS,
  then HIT), and an entry written before the outage is never served: the bump a write could not
  make during the outage is replayed as a global bump, in the background as soon as Redis
  answers (checked with Redis keeping its data).
- Rate limits (counted in Redis) fail open: login answers 200/401, not 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.cache.store import ENTRY_KEY_PREFIX, GLOBAL_GENERATION, task_generation
from tests.conftest import TEST_PASSWORD, Account, side_app
from tests.conftest import test_settings as settings_for
from tests.reliability.helpers import RedisServer, running_redis

RETRY_AFTER = 0.2  # cache_retry_after_seconds
# Seconds: no request may take longer while Redis is down or hung (a write waits up to 0.5 s
# for its bumps, BUMP_PATIENCE_SECONDS, before it leaves them to the background replay).
REQUEST_BOUND = 1.0
PAUSE_MS = 2000  # the hang; the outage's requests must be done well within it
Headers = dict[str, str]


class TimedClient:
    """A test client that times every request."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.timings: list[tuple[float, str]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> TestResponse:
        start = time.perf_counter()
        response = self.client.open(url, method=method, **kwargs)
        self.timings.append((time.perf_counter() - start, f"{method} {url}"))
        return response

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", url, **kwargs)

    def slowest(self) -> tuple[float, str]:
        return max(self.timings)

    def assert_all_fast(self) -> None:
        seconds, what = self.slowest()
        assert seconds < REQUEST_BOUND, f"{what} took {seconds:.3f}s"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
def redis_app(app: APIFlask, redis_server: RedisServer) -> Iterator[APIFlask]:
    """The cache and the rate-limit counts in the test's Redis, on the `app` fixture's database."""
    settings = settings_for(
        app.config["SQLALCHEMY_DATABASE_URI"],
        redis_url=redis_server.url,
        cache_retry_after_seconds=RETRY_AFTER,
        ratelimit_enabled=True,
        ratelimit_auth="100/minute",
    )
    with side_app(settings) as application:
        assert application.extensions["response_cache"].backend.name == "redis"
        yield application


def log_in(client: TimedClient, account: Account, password: str = TEST_PASSWORD) -> TestResponse:
    return client.request(
        "POST", "/login", json={"username": account.username, "password": password}
    )


def bearer(response: TestResponse) -> Headers:
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def task_names(response: TestResponse) -> list[str]:
    assert response.status_code == 200, response.json
    return sorted(item["task_name"] for item in response.json["items"])


def cache_check(client: TimedClient) -> str:
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.json
    assert ready.json["status"] == "ok"
    assert ready.json["checks"]["database"] == "ok"
    assert ready.json["checks"]["cache_backend"] == "redis"
    return str(ready.json["checks"]["cache"])


def wait_for_cache(client: TimedClient, url: str, headers: Headers) -> TestResponse:
    """The first request after `cache_retry_after_seconds` that uses the cache again."""
    deadline = time.monotonic() + 10 * RETRY_AFTER + 5
    while True:
        response = client.get(url, headers=headers)
        if response.headers["X-Cache"] != "BYPASS":
            return response
        assert time.monotonic() < deadline, "the cache was not used again after Redis came back"
        time.sleep(RETRY_AFTER / 4)


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "app.cache.store" and r.levelno == logging.WARNING
    ]


def test_a_killed_redis_is_bypassed_and_the_cache_comes_back(
    redis_app: APIFlask, redis_server: RedisServer, alice: Account, caplog: pytest.LogCaptureFixture
) -> None:
    client = TimedClient(redis_app.test_client())
    headers = bearer(log_in(client, alice))
    first = client.request("POST", "/task", json={"task_name": "before"}, headers=headers)
    assert first.status_code == 201
    task_id = first.json["id"]
    assert client.get("/tasks", headers=headers).headers["X-Cache"] == "MISS"
    assert client.get("/tasks", headers=headers).headers["X-Cache"] == "HIT"
    assert cache_check(client) == "ok"
    assert not cache_warnings(caplog)

    redis_server.kill()
    client.timings.clear()

    listed = client.get("/tasks", headers=headers)
    assert (listed.headers["X-Cache"], task_names(listed)) == ("BYPASS", ["before"])
    created = client.request("POST", "/task", json={"task_name": "during"}, headers=headers)
    assert created.status_code == 201, created.json
    updated = client.request(
        "PUT", f"/task/{task_id}", json={"task_name": "before, renamed"}, headers=headers
    )
    assert updated.status_code == 200, updated.json
    listed = client.get("/tasks", headers=headers)
    assert (listed.headers["X-Cache"], task_names(listed)) == (
        "BYPASS",
        ["before, renamed", "during"],
    )
    one = client.get(f"/task/{task_id}", headers=headers)
    assert (one.status_code, one.headers["X-Cache"]) == (200, "BYPASS")
    assert one.json["task_name"] == "before, renamed"
    assert cache_check(client) == "degraded"
    # Rate limits fail open: logins are answered, not refused.
    assert log_in(client, alice).status_code == 200
    assert log_in(client, alice, "not the password").status_code == 401
    client.assert_all_fast()
    assert cache_warnings(caplog), "no warning logged for the unavailable cache"

    redis_server.start()  # the same port, empty
    back = wait_for_cache(client, "/tasks", headers)
    assert (back.headers["X-Cache"], task_names(back)) == ("MISS", ["before, renamed", "during"])
    again = client.get("/tasks", headers=headers)
    assert (again.headers["X-Cache"], task_names(again)) == ("HIT", ["before, renamed", "during"])
    assert cache_check(client) == "ok"


def test_a_hung_redis_keeping_its_data_never_serves_what_was_cached_before(
    redis_app: APIFlask, redis_server: RedisServer, alice: Account, caplog: pytest.LogCaptureFixture
) -> None:
    client = TimedClient(redis_app.test_client())
    headers = bearer(log_in(client, alice))
    created = client.request("POST", "/task", json={"task_name": "v1"}, headers=headers)
    task_id = created.json["id"]
    task_url = f"/task/{task_id}"
    for url in (task_url, "/tasks"):
        assert client.get(url, headers=headers).headers["X-Cache"] == "MISS"
        assert client.get(url, headers=headers).headers["X-Cache"] == "HIT"
    etag_before = client.get(task_url, headers=headers).headers["ETag"]
    store = redis_server.client()
    entries_before = set(store.keys(f"{ENTRY_KEY_PREFIX}*"))
    assert entries_before
    generations_before = store.mget([GLOBAL_GENERATION, task_generation(task_id)])

    redis_server.pause(PAUSE_MS)
    paused_at = time.monotonic()
    client.timings.clear()

    written = client.request("PUT", task_url, json={"task_name": "v2"}, headers=headers)
    assert written.status_code == 200, written.json
    one = client.get(task_url, headers=headers)
    assert (one.headers["X-Cache"], one.json["task_name"]) == ("BYPASS", "v2")
    listed = client.get("/tasks", headers=headers)
    assert (listed.headers["X-Cache"], task_names(listed)) == ("BYPASS", ["v2"])
    assert cache_check(client) == "degraded"
    assert log_in(client, alice).status_code == 200
    client.assert_all_fast()
    outage = time.monotonic() - paused_at
    assert outage < PAUSE_MS / 1000 - 0.5, f"the outage's requests took {outage:.2f}s"
    assert cache_warnings(caplog)

    redis_server.wait_unpaused()
    # Redis kept its data and the write's bump never reached it: the entries cached before the
    # outage are still there, under a task generation that did not move. The bump given up is
    # replayed as a global bump as soon as Redis answers, without waiting for a request.
    assert entries_before <= set(store.keys(f"{ENTRY_KEY_PREFIX}*"))
    assert store.get(task_generation(task_id)) == generations_before[1]
    deadline = time.monotonic() + 5
    while store.get(GLOBAL_GENERATION) == generations_before[0]:
        assert time.monotonic() < deadline, "the missed bump was not replayed in the background"
        time.sleep(0.02)

    back = wait_for_cache(client, task_url, headers)
    assert back.headers["X-Cache"] == "MISS", "an entry cached before the outage was served"
    assert (back.json["task_name"], back.headers["ETag"]) == ("v2", f'"task-{task_id}-v2"')
    assert back.headers["ETag"] != etag_before
    # The missed bump was replayed as a global bump.
    assert int(store.get(GLOBAL_GENERATION) or 0) > int(generations_before[0] or 0)
    listed = client.get("/tasks", headers=headers)
    assert (listed.headers["X-Cache"], task_names(listed)) == ("MISS", ["v2"])
    for url in (task_url, "/tasks"):
        hit = client.get(url, headers=headers)
        assert hit.headers["X-Cache"] == "HIT"
    assert client.get(task_url, headers=headers).json["task_name"] == "v2"
    not_modified = client.get(task_url, headers={**headers, "If-None-Match": etag_before})
    assert not_modified.status_code == 200
    assert cache_check(client) == "ok"


def test_rate_limits_fail_open_when_redis_is_down(
    app: APIFlask, redis_server: RedisServer, alice: Account
) -> None:
    settings = settings_for(
        app.config["SQLALCHEMY_DATABASE_URI"],
        redis_url=redis_server.url,
        ratelimit_enabled=True,
        ratelimit_auth="3/minute",
    )
    with side_app(settings) as application:
        client = TimedClient(application.test_client())
        assert log_in(client, alice).status_code == 200
        assert any(b"10.0.0" in k or b"127.0.0.1" in k for k in redis_server.client().keys("*"))

        redis_server.kill()
        client.timings.clear()
        statuses = [log_in(client, alice, "not the password").status_code for _ in range(2)]
        statuses.append(log_in(client, alice).status_code)
        assert statuses == [401, 401, 200]
        client.assert_all_fast()
        # Not unlimited either: counting goes on in this process's memory.
        assert log_in(client, alice).status_code == 429


def test_a_worker_that_saw_the_outage_does_not_serve_what_it_cached_before(
    app: APIFlask, redis_server: RedisServer, alice: Account
) -> None:
    """Two workers on one Redis: the write (and its lost bump) happens in one, the next read in
    the other, which had noticed the outage too."""
    settings = settings_for(
        app.config["SQLALCHEMY_DATABASE_URI"],
        redis_url=redis_server.url,
        cache_retry_after_seconds=RETRY_AFTER,
    )
    with side_app(settings) as worker_a, side_app(settings) as worker_b:
        writer, reader = TimedClient(worker_a.test_client()), TimedClient(worker_b.test_client())
        headers = bearer(log_in(writer, alice))
        task_id = writer.request("POST", "/task", json={"task_name": "v1"}, headers=headers).json[
            "id"
        ]
        task_url = f"/task/{task_id}"
        assert reader.get(task_url, headers=headers).headers["X-Cache"] == "MISS"
        assert reader.get(task_url, headers=headers).headers["X-Cache"] == "HIT"

        redis_server.pause(PAUSE_MS)
        written = writer.request("PUT", task_url, json={"task_name": "v2"}, headers=headers)
        assert written.status_code == 200, written.json
        during = reader.get(task_url, headers=headers)
        assert (during.headers["X-Cache"], during.json["task_name"]) == ("BYPASS", "v2")
        writer.assert_all_fast()
        reader.assert_all_fast()
        redis_server.wait_unpaused()

        back = wait_for_cache(reader, task_url, headers)
        assert (back.headers["X-Cache"], back.json["task_name"]) == ("MISS", "v2")
        assert reader.get(task_url, headers=headers).headers["X-Cache"] == "HIT"
