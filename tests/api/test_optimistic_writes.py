"""`PUT /task/<id>` is decided on the task read without a lock and written only if the task is
still at the version read (app.services.tasks.update_task). A write that gets in between turns a
client's `If-Match` into a 412 with nothing written; without `If-Match` the update is decided
again on the task read with its row locked, and applies on top of the other write. On PostgreSQL
the write and its audit row are one statement, run in autocommit on the driver's cursor.

The write that gets in between is a real one: committed on a connection of its own, after the
request's first read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import Client

from app.cache.invalidation import bump
from app.cache.store import GLOBAL_GENERATION
from app.database import fixed_plan_engine
from app.extensions import db
from app.repositories import tasks as task_repo
from tests.api.conftest import hot_paths_of
from tests.api.test_direct_writes import history, new_task, remembered
from tests.api.test_driver_reads import kill_the_next_pooled_connection
from tests.conftest import Account

Headers = dict[str, str]
Login = Callable[[Account], Headers]
PATHS = ["hot path", "flask"]


def put(app: APIFlask, client: FlaskClient, path: str) -> Callable[..., Any]:
    """`client.put` through the hot-path middleware, or straight to Flask behind it."""
    return client.put if path == "hot path" else Client(hot_paths_of(app).next_app).put


class Reads:
    """The `locked` flag of each read of the task the service made; with `interfere`, another
    writer renames the task and commits right after the first unlocked read."""

    def __init__(self) -> None:
        self.locked: list[bool] = []
        self.interfere = False


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    spy = Reads()
    read = task_repo.task_row_for_write

    def recorded_read(task_id: int, scope: Any, *, locked: bool) -> Any:
        task = read(task_id, scope, locked=locked)
        spy.locked.append(locked)
        if spy.interfere and not locked:
            spy.interfere = False
            with db.engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE task_manager SET task_name = 'theirs', version = version + 1 "
                        "WHERE id = :id"
                    ),
                    {"id": task_id},
                )
            bump([GLOBAL_GENERATION])  # what the other writer's commit does to the cache
        return task

    monkeypatch.setattr(task_repo, "task_row_for_write", recorded_read)
    return spy


@pytest.fixture
def another_write_gets_in(reads: Reads) -> Reads:
    reads.interfere = True
    return reads


@pytest.mark.parametrize("path", PATHS)
def test_a_write_that_gets_in_between_turns_a_current_if_match_into_a_412(
    app: APIFlask,
    client: FlaskClient,
    alice: Account,
    login: Login,
    another_write_gets_in: Reads,
    path: str,
) -> None:
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)
    etag = client.get(f"/task/{task_id}", headers=headers).headers["ETag"]
    before = history(client, headers, task_id)

    response = put(app, client, path)(
        f"/task/{task_id}", json={"priority": "high"}, headers={**headers, "If-Match": etag}
    )

    assert response.status_code == 412, response.json
    assert response.json["code"] == 412
    # The tag matched the task as first read; the write found it moved on. (A 412 of the hot
    # path is answered by Flask from the start: it reads again and finds the tag stale.)
    assert another_write_gets_in.locked == ([False, False] if path == "hot path" else [False])
    after = client.get(f"/task/{task_id}", headers=headers)
    assert after.json["task_name"] == "theirs" and after.json["priority"] == "MEDIUM"
    assert after.headers["ETag"] == f'"task-{task_id}-v2"'  # the other write's version
    assert history(client, headers, task_id) == before  # nothing of this request's


@pytest.mark.parametrize("if_match", [None, "*"])
@pytest.mark.parametrize("path", PATHS)
def test_without_an_if_match_tag_the_update_applies_on_top_of_the_write_that_got_in(
    app: APIFlask,
    client: FlaskClient,
    alice: Account,
    login: Login,
    another_write_gets_in: Reads,
    path: str,
    if_match: str | None,
) -> None:
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)
    sent = headers if if_match is None else {**headers, "If-Match": if_match}  # `*`: it exists

    response = put(app, client, path)(f"/task/{task_id}", json={"priority": "high"}, headers=sent)

    assert response.status_code == 200, response.json
    assert another_write_gets_in.locked == [False, True]  # decided again, on the locked task
    assert response.json["task_name"] == "theirs" and response.json["priority"] == "HIGH"
    assert response.headers["ETag"] == f'"task-{task_id}-v3"'
    assert client.get(f"/task/{task_id}", headers=headers).json == response.json
    [update, _created] = history(client, headers, task_id)
    assert update["action"] == "updated"
    assert update["changes"] == {"priority": {"old": "MEDIUM", "new": "HIGH"}}


@pytest.mark.parametrize("path", PATHS)
def test_an_update_without_a_race_reads_the_task_once_without_a_lock(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login, reads: Reads, path: str
) -> None:
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)

    response = put(app, client, path)(
        f"/task/{task_id}", json={"status": "inactive"}, headers=headers
    )

    assert response.status_code == 200 and response.json["status"] == "inactive"
    assert reads.locked == [False]


def test_an_update_the_write_in_between_made_moot_writes_nothing_of_its_own(
    client: FlaskClient, alice: Account, login: Login, another_write_gets_in: Reads
) -> None:
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)

    response = client.put(f"/task/{task_id}", json={"task_name": "theirs"}, headers=headers)

    # Decided again on the locked task, the rename left nothing to change: no audit row.
    assert response.status_code == 200 and response.json["task_name"] == "theirs"
    assert another_write_gets_in.locked == [False, True]
    assert response.headers["ETag"] == f'"task-{task_id}-v2"'
    assert [e["action"] for e in history(client, headers, task_id)] == ["created"]


def test_on_postgresql_an_update_is_a_read_and_one_write_in_autocommit(
    app: APIFlask,
    backend: str,
    client: FlaskClient,
    alice: Account,
    login: Login,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the driver sends for a PUT: the read, then the UPDATE with its audit row in one
    statement, both in autocommit; no BEGIN, COMMIT or ROLLBACK."""
    if backend != "postgresql":
        pytest.skip("SQLite has no data-modifying CTE: the UPDATE and INSERT run in a transaction")
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)
    sent: list[tuple[str, str]] = []
    execute, command = psycopg.Cursor.execute, psycopg.Connection._exec_command

    def recorded_execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        mode = "autocommit" if cursor.connection.autocommit else "in a transaction"
        sent.append((mode, str(query).split()[0]))
        return execute(cursor, query, *args, **kwargs)

    def recorded_command(connection: Any, sql: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(("command", bytes(sql).decode() if isinstance(sql, bytes) else str(sql)))
        return command(connection, sql, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recorded_execute)
    monkeypatch.setattr(psycopg.Connection, "_exec_command", recorded_command)
    for path in PATHS:
        cached = client.get(f"/task/{task_id}", headers=headers)  # to go stale
        assert cached.status_code == 200 and cached.json["description"] != path
        sent.clear()
        response = put(app, client, path)(
            f"/task/{task_id}", json={"description": path}, headers=headers
        )
        assert response.status_code == 200
        assert sent == [("autocommit", "SELECT"), ("autocommit", "WITH")], (path, sent)
        # Written outside the session, the update still made the cached answer stale.
        assert client.get(f"/task/{task_id}", headers=headers).json["description"] == path
    assert [e["action"] for e in history(client, headers, task_id)] == [
        "updated",
        "updated",
        "created",
    ]


def test_a_write_on_a_dead_connection_is_retried_by_flask_and_written_once(
    app: APIFlask,
    backend: str,
    client: FlaskClient,
    alice: Account,
    login: Login,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The driver's write fails (its pooled connection was terminated after the read): nothing
    is written, the hot path hands the request to Flask, which reads and writes again."""
    if backend != "postgresql":
        pytest.skip("killing a pooled connection is a PostgreSQL matter")
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)
    read = task_repo.task_row_for_write
    killed: list[int] = []
    reads: list[bool] = []

    def read_then_kill_the_next_connection(task_id: int, scope: Any, *, locked: bool) -> Any:
        task = read(task_id, scope, locked=locked)
        reads.append(locked)
        if not killed:
            killed.append(kill_the_next_pooled_connection(fixed_plan_engine()))
        return task

    monkeypatch.setattr(task_repo, "task_row_for_write", read_then_kill_the_next_connection)
    response = client.put(f"/task/{task_id}", json={"priority": "high"}, headers=headers)

    assert killed and response.status_code == 200, response.json
    assert reads == [False, False]  # the hot path's attempt, then Flask's
    assert response.json["priority"] == "HIGH"
    assert response.headers["ETag"] == f'"task-{task_id}-v2"'  # written once
    assert [e["action"] for e in history(client, headers, task_id)] == ["updated", "created"]
