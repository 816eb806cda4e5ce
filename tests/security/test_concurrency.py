"""Races: concurrent conditional writes, concurrent sign-ups of one name and concurrent daily loads
of one day. Each request or load runs in a thread of its own (its own client or app context), all
released at once by a barrier."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import TaskLogEntry
from app.models.types import utcnow
from app.services import loader
from tests.conftest import Account
from tests.security.helpers import count_rows, race

Login = Callable[[Account], dict[str, str]]


def _audit_entries(app: APIFlask, task_id: int) -> int:
    from app.models import TaskAuditEntry

    with app.app_context():
        query = select(func.count()).where(TaskAuditEntry.task_id == task_id)
        return int(db.session.scalar(query.select_from(TaskAuditEntry)) or 0)


def test_fifty_puts_with_one_if_match_let_exactly_one_through(
    app: APIFlask, backend: str, client: FlaskClient, moderator: Account, login: Login
) -> None:
    if backend != "postgresql":
        pytest.skip("a 50-connection race is a PostgreSQL matter (SQLite serialises writers)")
    headers = login(moderator)
    task = client.post("/task", json={"task_name": "contended"}, headers=headers)
    task_id = task.json["id"]
    etag = client.get(f"/task/{task_id}", headers=headers).headers["ETag"]
    audit_before = _audit_entries(app, task_id)

    def put(n: int) -> Callable[[], int]:
        def send() -> int:
            response = app.test_client().put(
                f"/task/{task_id}",
                json={"task_name": f"writer {n}"},
                headers={**headers, "If-Match": etag},
            )
            return response.status_code

        return send

    statuses = race([put(n) for n in range(50)])

    assert sorted(statuses) == [200] + [412] * 49, statuses
    assert _audit_entries(app, task_id) == audit_before + 1
    final = client.get(f"/task/{task_id}", headers=headers)
    assert final.json["task_name"].startswith("writer ")
    assert final.headers["ETag"] != etag


def test_twenty_unconditional_puts_at_once_all_apply_one_after_the_other(
    app: APIFlask, backend: str, client: FlaskClient, moderator: Account, login: Login
) -> None:
    """Without If-Match, an update that loses the race of its optimistic write is decided again
    on the locked task (on SQLite, under the database's write lock): none is refused, none is
    lost, each is audited once."""
    headers = login(moderator)
    task_id = client.post("/task", json={"task_name": "contended"}, headers=headers).json["id"]
    audit_before = _audit_entries(app, task_id)

    def put(n: int) -> Callable[[], int]:
        def send() -> int:
            response = app.test_client().put(
                f"/task/{task_id}", json={"description": f"writer {n}"}, headers=headers
            )
            return response.status_code

        return send

    statuses = race([put(n) for n in range(20)])

    assert statuses == [200] * 20, statuses
    assert _audit_entries(app, task_id) == audit_before + 20
    final = client.get(f"/task/{task_id}", headers=headers)
    assert final.headers["ETag"] == f'"task-{task_id}-v21"'
    assert final.json["description"].startswith("writer ")


def test_twenty_registrations_of_one_username_make_one_account(app: APIFlask) -> None:
    def register(n: int) -> Callable[[], int]:
        def send() -> int:
            body = {
                "username": "racer",
                "email": f"racer{n}@example.com",
                "password": "long enough",
            }
            return app.test_client().post("/register", json=body).status_code

        return send

    statuses = race([register(n) for n in range(20)])

    assert sorted(statuses) == [201] + [409] * 19, statuses
    assert count_rows(app, "users") == 1


def test_two_daily_loads_of_one_day_at_once_log_each_task_once(
    app: APIFlask, client: FlaskClient, admin: Account, login: Login
) -> None:
    headers = login(admin)
    for n in range(30):
        assert client.post("/task", json={"task_name": f"t{n}"}, headers=headers).status_code == 201
    day = utcnow().date()

    def load() -> str:
        with app.app_context():
            try:
                return str(loader.run_inline(day, "test").state)
            finally:
                db.session.remove()

    race([load, load])

    with app.app_context():
        rows = db.session.execute(
            select(TaskLogEntry.task_id, func.count())
            .where(TaskLogEntry.log_date == day)
            .group_by(TaskLogEntry.task_id)
        ).all()
    assert len(rows) == 30
    assert {count for _task, count in rows} == {1}
    # A third load of the day logs nothing more.
    with app.app_context():
        loader.run_inline(day, "test")
    assert count_rows(app, "task_logger") == 30
