"""PostgreSQL failures under a running app: a throwaway cluster of the test's own is stopped with
`pg_ctl stop -m immediate` (every backend killed at once, as in a crash) while threads keep sending
requests through the test client (in-process: the same app, pool and error handlers as under
the server, without a second process to manage), then started again on the same port.

- While it is down, every request fails fast (a bound, with a generous margin over the 2 s
  connect timeout: no request waits on a dead database) with a 503 in the JSON error shape and a
  `Retry-After` header; GET /ready answers 503 with `checks.database` "down"; a warning is logged
  per failed request, never a stack trace.
- When it is back, the API recovers by itself (pool pre-ping replaces the dead connections) within
  a few seconds, with no request failing after /ready says ready.
- Every write acknowledged with a 201 during the whole test is in the database afterwards.

The mapping itself (which SQLAlchemy errors are a 503, which stay a 500) is checked without a
server, on SQLite, by routes that raise them.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from app.extensions import db
from app.models import Role, Task, User
from app.services.context import passwords
from tests.conftest import TEST_PASSWORD, side_app
from tests.conftest import test_settings as settings_for
from tests.reliability.helpers import PostgresServer, running_postgres

CONNECT_TIMEOUT = 2  # db_connect_timeout_seconds (also the pool timeout)
REQUEST_BOUND = 10.0  # seconds: no request may take longer, whatever the database does
RECOVERY_BOUND = 5.0  # seconds from the restart to /ready answering 200
WRITERS = 3
READERS = 1
Headers = dict[str, str]


@dataclass
class Outcome:
    kind: str  # "write" or "read"
    started: float
    seconds: float
    status: int
    body: Any
    retry_after: str | None


@dataclass
class Traffic:
    """Threads sending requests in a loop (each with its own test client) until stopped."""

    app: APIFlask
    headers: Headers
    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        kinds = ["write"] * WRITERS + ["read"] * READERS
        for number, kind in enumerate(kinds):
            thread = threading.Thread(target=self._loop, args=(number, kind), daemon=True)
            self.threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(REQUEST_BOUND + 5)
        assert not any(t.is_alive() for t in self.threads), "a request thread is stuck"

    def _loop(self, number: int, kind: str) -> None:
        client = self.app.test_client()
        sent = 0
        try:
            while not self.stopping.is_set():
                sent += 1
                started = time.monotonic()
                if kind == "write":
                    name = f"writer {number} task {sent}"
                    response = client.post("/task", json={"task_name": name}, headers=self.headers)
                else:
                    response = client.get("/tasks", headers=self.headers)
                outcome = Outcome(
                    kind,
                    started,
                    time.monotonic() - started,
                    response.status_code,
                    response.get_json(silent=True),
                    response.headers.get("Retry-After"),
                )
                with self.lock:
                    self.outcomes.append(outcome)
                time.sleep(0.01)
        except BaseException:  # an exception out of the app: reported by the test, not lost
            with self.lock:
                self.failures.append(traceback.format_exc())

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def wait_for(self, what: str, predicate: Any, timeout: float = REQUEST_BOUND) -> None:
        deadline = time.monotonic() + timeout
        while not any(predicate(o) for o in self.snapshot()):
            assert not self.failures, "\n".join(self.failures)
            assert time.monotonic() < deadline, f"no {what} within {timeout}s"
            time.sleep(0.02)


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_app(postgres_server: PostgresServer) -> Iterator[APIFlask]:
    """An app on the throwaway cluster, migrated, with an admin account."""
    settings = settings_for(postgres_server.url, db_connect_timeout_seconds=CONNECT_TIMEOUT)
    with side_app(settings) as application:
        with application.app_context():
            upgrade()
            db.session.add(
                User(
                    username="fault_admin",
                    email="fault_admin@example.com",
                    password_hash=passwords().hash(TEST_PASSWORD),
                    role=Role.ADMIN,
                )
            )
            db.session.commit()
        yield application


def log_in(client: FlaskClient) -> Headers:
    response = client.post("/login", json={"username": "fault_admin", "password": TEST_PASSWORD})
    body = response.get_json()
    assert response.status_code == 200, body
    return {"Authorization": f"Bearer {body['access_token']}"}


def assert_unavailable(status: int, body: Any, retry_after: str | None) -> None:
    assert status == 503, body
    assert isinstance(body, dict) and set(body) == {"code", "message", "description"}, body
    assert body["code"] == 503
    assert body["message"] == "Service Unavailable"
    assert "database" in body["description"].lower()
    for leak in ("psycopg", "OperationalError", "Traceback", "127.0.0.1"):
        assert leak not in str(body)
    assert retry_after is not None and int(retry_after) > 0


def timed(call: Any) -> Any:
    started = time.monotonic()
    response = call()
    seconds = time.monotonic() - started
    assert seconds < REQUEST_BOUND, f"took {seconds:.2f}s"
    return response


def test_a_crashed_postgres_answers_503_and_the_api_recovers_without_losing_writes(
    pg_app: APIFlask, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    client = pg_app.test_client()
    headers = log_in(client)
    assert client.get("/ready").status_code == 200
    traffic = Traffic(pg_app, headers)
    traffic.start()
    try:
        traffic.wait_for("acknowledged write", lambda o: o.status == 201)

        postgres_server.stop()  # -m immediate
        down_at = time.monotonic()
        traffic.wait_for("503 while down", lambda o: o.started > down_at and o.status == 503)

        ready = timed(lambda: client.get("/ready"))
        assert ready.status_code == 503, ready.json
        assert ready.json["status"] == "unavailable"
        assert ready.json["checks"]["database"] == "down"
        for call in (
            lambda: client.post("/task", json={"task_name": "main, down"}, headers=headers),
            # Reads the cache cannot answer (GET /tasks itself may be a hit, stored by the
            # traffic just before the crash: a cached answer needs no database): a search,
            # another page, a task.
            lambda: client.get("/tasks?q=not-cached-while-down", headers=headers),
            lambda: client.get("/tasks?per_page=3&sort=id", headers=headers),
            lambda: client.get("/task/1", headers=headers),
            lambda: client.post(
                "/login", json={"username": "fault_admin", "password": TEST_PASSWORD}
            ),
        ):
            response = timed(call)
            assert_unavailable(
                response.status_code, response.get_json(), response.headers.get("Retry-After")
            )
        time.sleep(1.0)  # more failed requests from the threads, on a pool of dead connections

        postgres_server.start()  # the same port; crash recovery first
        restarted_at = time.monotonic()
        while (ready := client.get("/ready")).status_code != 200:
            assert time.monotonic() - restarted_at < RECOVERY_BOUND, ready.json
            time.sleep(0.1)
        recovered_at = time.monotonic()
        recovery = recovered_at - restarted_at
        assert ready.json["checks"]["database"] == "ok"
        traffic.wait_for(
            "acknowledged write after recovery",
            lambda o: o.started > recovered_at and o.status == 201,
        )
        time.sleep(0.5)
    finally:
        traffic.stop()

    assert not traffic.failures, "\n".join(traffic.failures)
    outcomes = traffic.snapshot()
    slowest = max(outcomes, key=lambda o: o.seconds)
    assert slowest.seconds < REQUEST_BOUND, slowest
    for outcome in outcomes:
        assert outcome.status in ({201, 503} if outcome.kind == "write" else {200, 503}), outcome
        if outcome.status == 503:
            assert_unavailable(outcome.status, outcome.body, outcome.retry_after)
    after = [o for o in outcomes if o.started > recovered_at]
    assert after and all(o.status != 503 for o in after), "a request failed after recovery"
    failed = [o for o in outcomes if o.status == 503]
    assert len(failed) >= WRITERS

    # Every acknowledged write survived the crash.
    acknowledged = {int(o.body["id"]) for o in outcomes if o.status == 201}
    with pg_app.app_context():
        stored = set(db.session.scalars(select(Task.id).where(Task.id.in_(acknowledged))))
    assert stored == acknowledged, f"lost acknowledged writes: {sorted(acknowledged - stored)}"

    # One warning per failed request, no stack trace (no "unhandled error"). Flask itself logs one
    # when the database dies between the view and the request log's after_request hook (it reads
    # the user's id, which a commit expired): rare, and still answered 503.
    errors_log = [r for r in caplog.records if r.name == "app.api.errors"]
    assert [r for r in errors_log if r.levelno == logging.WARNING]
    assert not [r for r in errors_log if r.levelno >= logging.ERROR or r.exc_info]
    print(
        f"\nrequests {len(outcomes)}, 503s {len(failed)}, acknowledged writes "
        f"{len(acknowledged)}, slowest {slowest.seconds:.3f}s, recovery {recovery:.2f}s"
    )


class _DriverError(Exception):
    """Stands for the driver's exception that SQLAlchemy wraps."""


RAISED: dict[str, Exception] = {
    "operational": sa_exc.OperationalError("SELECT 1", {}, _DriverError("server closed")),
    "interface": sa_exc.InterfaceError("SELECT 1", {}, _DriverError("connection already closed")),
    "invalidated": sa_exc.DBAPIError(
        "SELECT 1", {}, _DriverError("lost"), connection_invalidated=True
    ),
    "pool": sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
    "programming": sa_exc.ProgrammingError("SELEC 1", {}, _DriverError("syntax error")),
}


@pytest.fixture
def raising_app(tmp_path: Path) -> Iterator[APIFlask]:
    with side_app(settings_for(f"sqlite:///{tmp_path / 'raising.db'}")) as application:

        @application.get("/raise/<kind>")
        def raise_it(kind: str) -> dict[str, str]:
            raise RAISED[kind]

        yield application


@pytest.mark.parametrize("kind", ["operational", "interface", "invalidated", "pool"])
def test_an_unreachable_database_is_503_with_retry_after_and_one_warning(
    raising_app: APIFlask, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = raising_app.test_client().get(f"/raise/{kind}")
    assert_unavailable(
        response.status_code, response.get_json(), response.headers.get("Retry-After")
    )
    for leak in ("server closed", "already closed", "QueuePool", "SELECT"):
        assert leak not in response.get_data(as_text=True)
    records = [r for r in caplog.records if r.name == "app.api.errors"]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.WARNING, None)]


def test_a_broken_statement_is_still_a_500(
    raising_app: APIFlask, caplog: pytest.LogCaptureFixture
) -> None:
    response = raising_app.test_client().get("/raise/programming")
    assert response.status_code == 500
    assert response.get_json()["code"] == 500
    assert "Retry-After" not in response.headers
    assert any(r.levelno == logging.ERROR for r in caplog.records if r.name == "app.api.errors")
