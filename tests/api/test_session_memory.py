"""Sessions remembered per process (app.auth.session_memory) and verified tokens: a hot read needs
no auth query, and yet every change to a session takes effect at once in every process.

Two apps on one database and one real Redis (a throwaway redis-server) stand for two server
workers: `first` makes the change, `second` had remembered the session and must not honour it
a moment later. A remembered session is trusted for `TRUST_SECONDS` at most, whatever the
counters say (what a revocation whose bump fails relies on: tests/reliability/
test_revocation_bumps.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import event, update
from werkzeug.test import TestResponse

from app.auth.session_memory import TRUST_SECONDS
from app.cache.store import GLOBAL_GENERATION
from app.extensions import db
from app.models import Role, User
from tests.conftest import TEST_PASSWORD, Account, side_app
from tests.conftest import test_settings as settings_for
from tests.reliability.helpers import RedisServer, running_redis

Headers = dict[str, str]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
def workers(app: APIFlask, redis_server: RedisServer) -> Iterator[tuple[APIFlask, APIFlask]]:
    # Retried at once after a failure: a restarted Redis is used by the very next request.
    settings = settings_for(
        app.config["SQLALCHEMY_DATABASE_URI"],
        redis_url=redis_server.url,
        cache_retry_after_seconds=0,
    )
    with side_app(settings) as first, side_app(settings) as second:
        yield first, second


def log_in(client: FlaskClient, account: Account) -> dict[str, Any]:
    response = client.post(
        "/login", json={"username": account.username, "password": account.password}
    )
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json
    return body


def bearer(tokens: dict[str, Any]) -> Headers:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


class StatementLog:
    """The SQL statements an app's engine runs while recording."""

    def __init__(self, application: APIFlask) -> None:
        self.statements: list[str] = []
        with application.app_context():
            self.engine = db.engine
        event.listen(self.engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def touching(self, table: str) -> list[str]:
        return [s for s in self.statements if table in s]


@pytest.fixture
def statements() -> Iterator[Callable[[APIFlask], StatementLog]]:
    logs: list[StatementLog] = []

    def _watch(application: APIFlask) -> StatementLog:
        logs.append(StatementLog(application))
        return logs[-1]

    yield _watch
    for log in logs:
        log.close()


def get_tasks(client: FlaskClient, headers: Headers, query: str = "") -> TestResponse:
    return client.get(f"/tasks{query}", headers=headers)


def test_a_remembered_session_is_confirmed_without_a_query(
    workers: tuple[APIFlask, APIFlask],
    alice: Account,
    statements: Callable[[APIFlask], StatementLog],
) -> None:
    first, _ = workers
    client = first.test_client()
    headers = bearer(log_in(client, alice))
    assert client.post("/task", json={"task_name": "mine"}, headers=headers).status_code == 201
    assert get_tasks(client, headers).status_code == 200

    log = statements(first)
    hit = get_tasks(client, headers)
    # Not cached yet: the list is queried (its count and page).
    miss = get_tasks(client, headers, "?q=mine")
    assert (hit.status_code, hit.headers["X-Cache"]) == (200, "HIT")
    assert (miss.status_code, miss.headers["X-Cache"]) == (200, "MISS")
    assert log.touching("token_families") == [] and log.touching("users") == []
    assert log.touching("task_manager"), "the miss did query its page"


def test_a_remembered_session_is_asked_again_once_its_trust_has_run_out(
    workers: tuple[APIFlask, APIFlask],
    alice: Account,
    statements: Callable[[APIFlask], StatementLog],
) -> None:
    first, _ = workers
    client = first.test_client()
    headers = bearer(log_in(client, alice))
    assert get_tasks(client, headers).status_code == 200  # verified, and remembered

    log = statements(first)
    assert get_tasks(client, headers).headers["X-Cache"] == "HIT"
    assert log.touching("token_families") == []

    time.sleep(TRUST_SECONDS)
    assert get_tasks(client, headers).headers["X-Cache"] == "HIT"  # the counters did not move
    assert log.touching("token_families"), "a session was trusted for longer than TRUST_SECONDS"
    checked = len(log.statements)
    assert get_tasks(client, headers).status_code == 200
    assert log.statements[checked:] == [], "asked again, the session is remembered again"


def test_logout_in_one_worker_ends_the_session_in_the_other_at_once(
    workers: tuple[APIFlask, APIFlask], alice: Account
) -> None:
    first, second = (w.test_client() for w in workers)
    headers = bearer(log_in(first, alice))
    assert get_tasks(second, headers).status_code == 200
    assert get_tasks(second, headers).headers["X-Cache"] == "HIT"

    assert first.post("/logout", headers=headers).status_code == 204

    for client in (second, first):
        refused = get_tasks(client, headers)
        assert refused.status_code == 401, refused.json
        assert "revoked" in refused.json["description"]


def test_a_demotion_in_one_worker_applies_at_once_in_the_other(
    workers: tuple[APIFlask, APIFlask],
    make_user: Callable[..., Account],
    alice: Account,
    bob: Account,
) -> None:
    first, second = (w.test_client() for w in workers)
    boss = make_user("boss", Role.ADMIN)
    deputy = make_user("deputy", Role.ADMIN)
    deputy_headers = bearer(log_in(second, deputy))
    boss_headers = bearer(log_in(first, boss))
    alice_task = first.post(
        "/task", json={"task_name": "alice's", "assigned_user_id": alice.id}, headers=boss_headers
    )
    assert alice_task.status_code == 201
    assert second.get("/admin/dashboard", headers=deputy_headers).status_code == 200
    staff_view = get_tasks(second, deputy_headers)
    assert staff_view.json["total"] == 1  # an admin sees alice's task

    demoted = first.patch(f"/admin/users/{deputy.id}", json={"role": "user"}, headers=boss_headers)
    assert demoted.status_code == 200, demoted.json

    assert second.get("/admin/dashboard", headers=deputy_headers).status_code == 403
    user_view = get_tasks(second, deputy_headers)
    assert user_view.status_code == 200
    assert user_view.json["total"] == 0, "the demoted account must not be served the staff list"
    assert bob.id  # (another user exists, so the scope, not an empty table, explains the 0)


def test_a_deactivation_in_one_worker_applies_at_once_in_the_other(
    workers: tuple[APIFlask, APIFlask], admin: Account, alice: Account
) -> None:
    first, second = (w.test_client() for w in workers)
    alice_headers = bearer(log_in(second, alice))
    assert get_tasks(second, alice_headers).status_code == 200

    admin_headers = bearer(log_in(first, admin))
    response = first.patch(
        f"/admin/users/{alice.id}", json={"is_active": False}, headers=admin_headers
    )
    assert response.status_code == 200, response.json

    assert get_tasks(second, alice_headers).status_code == 401


def test_a_password_change_ends_the_other_sessions_in_every_worker(
    workers: tuple[APIFlask, APIFlask], alice: Account
) -> None:
    first, second = (w.test_client() for w in workers)
    kept = bearer(log_in(first, alice))
    other = bearer(log_in(second, alice))
    assert get_tasks(second, other).status_code == 200
    assert get_tasks(second, kept).status_code == 200

    changed = first.patch(
        "/me",
        json={"password": "a brand new passphrase", "current_password": TEST_PASSWORD},
        headers=kept,
    )
    assert changed.status_code == 200, changed.json

    assert get_tasks(second, other).status_code == 401
    assert get_tasks(second, kept).status_code == 200  # the session that changed it goes on


def test_a_reused_refresh_token_revokes_the_session_in_every_worker(
    workers: tuple[APIFlask, APIFlask], alice: Account
) -> None:
    first, second = (w.test_client() for w in workers)
    tokens = log_in(first, alice)
    rotated = first.post("/token/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200
    new_headers = bearer(rotated.json)
    assert get_tasks(second, new_headers).status_code == 200

    replayed = first.post("/token/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert replayed.status_code == 401

    assert get_tasks(second, new_headers).status_code == 401


def test_a_bulk_update_of_users_that_names_nobody_forgets_every_session(
    workers: tuple[APIFlask, APIFlask], alice: Account
) -> None:
    """A bulk statement without `sessions_of_user` may touch anyone: everything is invalidated."""
    first, second = workers
    headers = bearer(log_in(second.test_client(), alice))
    assert get_tasks(second.test_client(), headers).status_code == 200

    with first.app_context():
        db.session.execute(
            update(User).where(User.id == alice.id).values(is_active=False),
            execution_options={"synchronize_session": False},
        )
        db.session.commit()

    assert get_tasks(second.test_client(), headers).status_code == 401


def test_with_redis_down_every_request_asks_the_database(
    workers: tuple[APIFlask, APIFlask], redis_server: RedisServer, alice: Account
) -> None:
    first, second = (w.test_client() for w in workers)
    headers = bearer(log_in(first, alice))
    # Remembered by `second` under a global generation bumped once: a Redis that lost its data
    # and counted again from 0 would reach that value with the one replayed bump below.
    workers[1].extensions["response_cache"].bump([GLOBAL_GENERATION])
    assert get_tasks(second, headers).status_code == 200

    redis_server.kill()
    bypassed = get_tasks(second, headers)
    assert (bypassed.status_code, bypassed.headers["X-Cache"]) == (200, "BYPASS")
    assert first.post("/logout", headers=headers).status_code == 204  # its bump is lost

    assert get_tasks(second, headers).status_code == 401

    redis_server.start()  # back, holding none of the old counters
    # `second` replays the outage as one global bump and asks the memory again: the counters
    # must not read as they did when the session was remembered.
    assert get_tasks(second, headers).status_code == 401
    assert workers[1].extensions["response_cache"].status().healthy


def test_an_expired_token_is_refused_though_it_was_verified_before(
    app: APIFlask, alice: Account
) -> None:
    # JWT times are whole seconds (PyJWT truncates them): a token of 2 s lives for more than
    # 1 s and at most 2 s after it is issued (with 1 s it could expire at once).
    settings = settings_for(app.config["SQLALCHEMY_DATABASE_URI"], access_token_ttl_seconds=2)
    with side_app(settings) as short_lived:
        client = short_lived.test_client()
        headers = bearer(log_in(client, alice))
        assert get_tasks(client, headers).status_code == 200
        time.sleep(2.2)
        expired = get_tasks(client, headers)
        assert expired.status_code == 401
        assert expired.json["description"] == "token expired"
