"""`GET /task/<id>` misses answered by the hot-path middleware (app.api.hot_paths) with a read on
the driver's cursor (app.repositories.driver_cursor): the very answer Flask's view gives, for every
role and task state; what the view answers otherwise (404) stays Flask's; the row read is the row
SQLAlchemy reads; the read runs in autocommit and a failed connection leaves the pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import OperationalError
from werkzeug.test import Client

from app.cache.store import task_generation
from app.database import fixed_plan_engine
from app.extensions import db
from app.models import Task, TaskStatus
from app.repositories.driver_cursor import compile_for_driver
from app.repositories.tasks import TaskScope, _visible_task_row_statement, visible_task_row
from tests.api.conftest import hot_paths_of
from tests.api.test_observability import scrape, value
from tests.conftest import Account

Headers = dict[str, str]
Login = Callable[[Account], Headers]


@pytest.fixture
def tasks(
    client: FlaskClient, admin: Account, alice: Account, bob: Account, login: Login
) -> dict[str, int]:
    """alice's task (every field set), bob's task, and a soft-deleted task of alice's."""
    headers = login(admin)

    def create(**fields: Any) -> int:
        response = client.post("/task", json=fields, headers=headers)
        assert response.status_code == 201, response.json
        task_id: int = response.json["id"]
        return task_id

    full = create(
        task_name="Ünïcode naïve ✓",
        description='quotes " and \\ backslash',
        priority="CRITICAL",
        assigned_user_id=alice.id,
        due_date=date(2031, 2, 3).isoformat(),
    )
    client.put(f"/task/{full}", json={"status": "inactive"}, headers=headers)  # version 2
    bobs = create(task_name="bob's", assigned_user_id=bob.id)
    deleted = create(task_name="gone", assigned_user_id=alice.id)
    assert client.delete(f"/task/{deleted}", headers=headers).status_code == 204
    return {"full": full, "bobs": bobs, "deleted": deleted}


def forget(app: APIFlask, task_id: int) -> None:
    """Make the task's cached answers stale, as a write to it would."""
    app.extensions["response_cache"].bump([task_generation(task_id)])


@pytest.mark.parametrize(
    ("caller", "task", "status"),
    [
        ("admin", "full", 200),
        ("admin", "deleted", 200),  # admins see soft-deleted tasks
        ("moderator", "full", 200),
        ("moderator", "deleted", 404),
        ("alice", "full", 200),
        ("alice", "bobs", 404),
        ("alice", "deleted", 404),
    ],
)
def test_a_miss_is_answered_before_flask_exactly_as_flask_answers_it(
    request: pytest.FixtureRequest,
    app: APIFlask,
    client: FlaskClient,
    login: Login,
    tasks: dict[str, int],
    flask_dispatches: list[str],
    caller: str,
    task: str,
    status: int,
) -> None:
    account: Account = request.getfixturevalue(caller)
    headers = {**login(account), "X-Request-ID": "direct-1"}
    client.get("/tasks", headers=headers)  # the session is remembered from here on
    path = f"/task/{tasks[task]}"
    forget(app, tasks[task])
    through_flask = Client(hot_paths_of(app).next_app).get(path, headers=headers)
    forget(app, tasks[task])
    flask_dispatches.clear()

    answer = client.get(path, headers=headers)

    assert answer.status_code == through_flask.status_code == status
    assert flask_dispatches == ([] if status == 200 else [path])
    assert answer.get_data() == through_flask.get_data()
    assert set(answer.headers.keys()) == set(through_flask.headers.keys())
    for name, flask_value in through_flask.headers.items():
        assert answer.headers[name] == flask_value, name
    if status == 200:
        assert answer.headers["X-Cache"] == "MISS"
        assert client.get(path, headers=headers).headers["X-Cache"] == "HIT"  # it was stored


def test_a_direct_miss_answers_304_on_a_matching_if_none_match_and_is_counted(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login, tasks: dict[str, int]
) -> None:
    headers = login(alice)
    client.get("/tasks", headers=headers)
    path = f"/task/{tasks['full']}"
    etag = client.get(path, headers=headers).headers["ETag"]
    forget(app, tasks["full"])
    misses_before = value(scrape(client), "cache_lookups_total", result="miss")

    not_modified = client.get(path, headers={**headers, "If-None-Match": etag})

    assert not_modified.status_code == 304 and not_modified.get_data() == b""
    assert not_modified.headers["ETag"] == etag and not_modified.headers["X-Cache"] == "MISS"
    assert value(scrape(client), "cache_lookups_total", result="miss") == misses_before + 1


def test_the_row_read_on_the_driver_is_the_row_sqlalchemy_reads(
    app: APIFlask, tasks: dict[str, int], alice: Account
) -> None:
    scopes = [TaskScope(None, include_deleted=True), TaskScope(None), TaskScope(alice.id)]
    with app.app_context():
        for scope in scopes:
            for task_id in [*tasks.values(), 999_999]:
                owned = scope.owner_id is not None
                params: dict[str, Any] = {"task_id": task_id}
                if owned:
                    params["owner_id"] = scope.owner_id
                statement = _visible_task_row_statement(owned, scope.include_deleted)
                expected = db.session.execute(statement, params).mappings().first()
                row = visible_task_row(task_id, scope)
                assert row == (dict(expected) if expected else None), (scope, task_id)
                if row is not None:  # the same types as well (e.g. aware datetimes, enums)
                    assert {k: type(v) for k, v in row.items()} == {
                        k: type(v) for k, v in expected.items()
                    }
                    orm = db.session.get(Task, task_id)
                    assert {key: getattr(orm, key) for key in row} == row
        db.session.rollback()


@pytest.fixture
def driver_statements(app: APIFlask, backend: str) -> Iterator[list[tuple[str, bool]]]:
    """(SQL, the connection's autocommit) of every query run on the pool's psycopg connections,
    recorded by the driver's own cursor (so reads below SQLAlchemy's events are seen too)."""
    if backend != "postgresql":
        pytest.skip("autocommit reads are PostgreSQL's")
    seen: list[tuple[str, bool]] = []

    class RecordingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append((str(query), self.connection.autocommit))
            return super().execute(query, *args, **kwargs)

    def record(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.cursor_factory = RecordingCursor

    with app.app_context():
        engine = fixed_plan_engine()
    engine.dispose()  # connections made from here on get the recording cursor
    event.listen(engine.pool, "checkout", record)
    yield seen
    event.remove(engine.pool, "checkout", record)
    engine.dispose()


def test_a_direct_read_runs_in_autocommit_on_a_pool_that_stays_in_autocommit(
    app: APIFlask,
    client: FlaskClient,
    alice: Account,
    login: Login,
    tasks: dict[str, int],
    driver_statements: list[tuple[str, bool]],
) -> None:
    headers = login(alice)
    client.get("/tasks", headers=headers)
    forget(app, tasks["full"])
    driver_statements.clear()

    answer = client.get(f"/task/{tasks['full']}", headers=headers)

    assert answer.headers["X-Cache"] == "MISS"
    [(sql, autocommit)] = driver_statements
    assert "task_manager" in sql and autocommit is True
    with app.app_context():
        engine = fixed_plan_engine()
        assert engine is not db.engine  # the ORM's pool is another (tests/api/test_read_path.py)
    # The fixed-plan pool runs only such statements: its connections stay in autocommit (and it
    # has no transaction to reset when one comes back).
    with engine.connect() as connection:
        assert connection.connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]


def kill_the_next_pooled_connection(engine: Engine) -> int:
    """Leave the pool one idle connection, the next it hands out, with its server process
    terminated; returns that process's id."""
    engine.dispose()
    doomed, killer = engine.connect(), engine.connect()
    pid: int = doomed.execute(text("SELECT pg_backend_pid()")).scalar_one()
    doomed.close()  # the pool hands it out first (first in, first out)
    killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    killer.commit()
    killer.close()
    return pid


def test_a_connection_that_fails_a_direct_read_is_discarded_and_flask_answers(
    app: APIFlask,
    backend: str,
    client: FlaskClient,
    alice: Account,
    login: Login,
    tasks: dict[str, int],
) -> None:
    if backend != "postgresql":
        pytest.skip("killing a pooled connection is a PostgreSQL matter")
    headers = login(alice)
    client.get("/tasks", headers=headers)
    with app.app_context():
        engine = fixed_plan_engine()
    pid = kill_the_next_pooled_connection(engine)
    forget(app, tasks["full"])

    answer = client.get(f"/task/{tasks['full']}", headers=headers)

    assert answer.status_code == 200 and answer.json["id"] == tasks["full"]
    with engine.connect() as connection:  # the dead connection did not go back to the pool
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_a_driver_read_on_a_dead_connection_raises_sqlalchemys_error(
    app: APIFlask, backend: str, tasks: dict[str, int]
) -> None:
    """As SQLAlchemy raises it, so the API's error handling answers 503, not 500."""
    if backend != "postgresql":
        pytest.skip("killing a pooled connection is a PostgreSQL matter")
    with app.app_context():
        kill_the_next_pooled_connection(fixed_plan_engine())

        with pytest.raises(OperationalError):
            visible_task_row(tasks["full"], TaskScope(None, include_deleted=True))
        assert visible_task_row(tasks["full"], TaskScope(None, include_deleted=True))  # recovered


def test_an_enum_column_is_read_as_sqlalchemy_reads_it(app: APIFlask) -> None:
    """Its processor is a lookup of the enum's stored values (app.repositories.driver_cursor):
    the same members, None for NULL, and a value the enum does not have is an error, as it is
    in SQLAlchemy (LookupError), not passed on as a string."""
    with app.app_context():
        dialect = db.engine.dialect
    statement = select(Task.status, Task.priority)
    driver = compile_for_driver(statement, dialect)
    sqlalchemy_status = Task.__table__.c.status.type.dialect_impl(dialect).result_processor(
        dialect, None
    )
    for status in TaskStatus:
        row = driver.row((status.value, None))
        assert row == {"status": sqlalchemy_status(status.value), "priority": None}
        assert row["status"] is status
    with pytest.raises(LookupError):
        driver.row(("archived", "LOW"))
