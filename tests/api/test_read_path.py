"""The read path's savings keep answers exact: list totals (and lists' ordered ids) from the
cache, GETs in autocommit, pooled connections pinged only when idle."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import event, text

from app.extensions import db
from app.repositories import tasks as task_repo
from tests.conftest import Account, side_app
from tests.conftest import test_settings as settings_for

Headers = dict[str, str]
Login = Callable[[Account], Headers]


@pytest.fixture
def statements(app: APIFlask) -> Iterator[list[tuple[str, bool]]]:
    """(SQL, whether the connection was in autocommit) for every statement the app runs."""
    seen: list[tuple[str, bool]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        seen.append((statement, bool(getattr(dbapi, "autocommit", False))))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def counts(seen: list[tuple[str, bool]]) -> list[str]:
    return [sql for sql, _ in seen if "count(" in sql.lower()]


@pytest.fixture
def list_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each count of a whole list."""
    reads: list[str] = []
    for name in ("count_tasks",):
        real = getattr(task_repo, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            reads.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(task_repo, name, spy)
    return reads


def test_a_lists_total_is_counted_once_for_every_page_and_order_until_a_write(
    client: FlaskClient, admin: Account, login: Login, list_reads: list[str]
) -> None:
    headers = login(admin)
    for n in range(5):
        client.post("/task", json={"task_name": f"t{n}", "priority": "HIGH"}, headers=headers)
    list_reads.clear()

    first = client.get("/tasks?priority=HIGH&per_page=2", headers=headers)
    other_page = client.get("/tasks?priority=HIGH&per_page=2&page=2", headers=headers)
    other_order = client.get("/tasks?priority=HIGH&per_page=2&sort=id", headers=headers)
    assert [r.json["total"] for r in (first, other_page, other_order)] == [5, 5, 5]
    assert list_reads == ["count_tasks"], "the order does not change the total"

    client.post("/task", json={"task_name": "t5", "priority": "HIGH"}, headers=headers)
    after_write = client.get("/tasks?priority=HIGH&per_page=2&page=3", headers=headers)
    assert after_write.json["total"] == 6 and after_write.json["pages"] == 3
    assert len(after_write.json["items"]) == 2
    assert list_reads == ["count_tasks"] * 2


def test_a_searchs_total_is_counted_once_until_a_write_changes_it(
    client: FlaskClient, admin: Account, login: Login, list_reads: list[str]
) -> None:
    headers = login(admin)
    for n in range(5):
        client.post("/task", json={"task_name": f"t{n}", "priority": "HIGH"}, headers=headers)
    list_reads.clear()

    first = client.get("/tasks?q=t&per_page=2", headers=headers)
    other_page = client.get("/tasks?q=t&per_page=2&page=2", headers=headers)
    other_order = client.get("/tasks?q=t&per_page=2&sort=id", headers=headers)
    assert [r.json["total"] for r in (first, other_page, other_order)] == [5, 5, 5]
    assert list_reads == ["count_tasks"]

    client.post("/task", json={"task_name": "t5", "priority": "HIGH"}, headers=headers)
    after_write = client.get("/tasks?q=t&per_page=2&page=3", headers=headers)
    assert after_write.json["total"] == 6 and after_write.json["pages"] == 3
    assert list_reads == ["count_tasks"] * 2


def test_a_page_past_the_end_is_empty_with_the_true_total(
    client: FlaskClient, admin: Account, login: Login
) -> None:
    headers = login(admin)
    client.post("/task", json={"task_name": "only"}, headers=headers)
    beyond = client.get("/tasks?page=9", headers=headers)
    assert beyond.status_code == 200
    assert (beyond.json["items"], beyond.json["total"], beyond.json["pages"]) == ([], 1, 1)


def test_gets_read_in_autocommit_and_writes_of_several_statements_in_a_transaction(
    app: APIFlask,
    backend: str,
    client: FlaskClient,
    admin: Account,
    login: Login,
    statements: list[tuple[str, bool]],
) -> None:
    if backend != "postgresql":
        pytest.skip("autocommit reads are PostgreSQL's (SQLite reads are local)")
    headers = login(admin)
    created = client.post("/task", json={"task_name": "t"}, headers=headers).json
    statements.clear()

    # (GET /task/<id> reads below SQLAlchemy's events: tests/api/test_driver_reads.py)
    assert client.get("/tasks?q=t", headers=headers).status_code == 200
    reads = list(statements)
    statements.clear()
    # A soft delete locks the task's row, then writes it and its audit row. (An update is one
    # statement, run in autocommit: tests/api/test_optimistic_writes.py.)
    assert client.delete(f"/task/{created['id']}", headers=headers).status_code == 204
    writes = list(statements)

    assert reads and all(autocommit for _, autocommit in reads), reads
    assert writes and not any(autocommit for _, autocommit in writes), writes
    with app.app_context():  # the pooled connection came back out of autocommit
        connection = db.session.connection()
        assert connection.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]
        db.session.rollback()


def test_a_connection_idle_past_the_threshold_is_pinged_and_replaced_if_dead(
    app: APIFlask, backend: str, admin: Account
) -> None:
    if backend != "postgresql":
        pytest.skip("pinging pooled connections is PostgreSQL's")
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    with side_app(settings_for(url, db_ping_idle_seconds=0.2, db_pool_size=1)) as pinged:
        client = pinged.test_client()
        login = client.post("/login", json={"username": admin.username, "password": admin.password})
        headers = {"Authorization": f"Bearer {login.json['access_token']}"}
        assert client.get("/tasks", headers=headers).status_code == 200
        with pinged.app_context():
            pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            db.session.rollback()
        with app.app_context():  # another connection kills the pooled one
            db.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            db.session.commit()
        time.sleep(0.4)  # idle past the threshold: pinged at checkout, found dead, replaced

        response = client.get("/me", headers=headers)  # reads the account: a query
        assert response.status_code == 200, response.json
