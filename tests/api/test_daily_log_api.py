"""The daily log through the API: GET /tasks?date= (scoping, snapshot filters, pagination),
GET /logs/<id>, GET /task/<id>/logs, the admin daily-log job and the dashboard's loader figures.

Days are logged by the loader itself (`loader.run_inline`) or through the job endpoint; with
`celery_always_eager` the job runs inside the request."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from app.extensions import db
from app.models import LoaderRun, Task, TaskLogEntry, TaskPriority, TaskStatus
from app.models.types import utcnow
from app.services import loader
from tests.conftest import Account

Headers = dict[str, str]
Login = Callable[[Account], Headers]

DAY = date(2030, 3, 14)
LOG_FIELDS = {"log_id", "log_date", "status", "priority", "assigned_user_id", "logged_at"}
TASK_FIELDS = {
    "id",
    "task_name",
    "description",
    "status",
    "priority",
    "assigned_user_id",
    "created_by_id",
    "created_at",
    "updated_at",
    "deleted_at",
    "due_date",
}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|\+00:00)$")
LINK = re.compile(r'<([^>]+)>;\s*rel="([a-z]+)"')


@dataclass(frozen=True)
class World:
    """Four users and their tasks; `logged` are the ones the loader logs (active, not deleted)."""

    admin: Account
    moderator: Account
    alice: Account
    bob: Account
    alice_own: int  # created by alice, unassigned, HIGH
    assigned_to_alice: int  # created by the admin, assigned to alice, LOW
    bobs: int  # created by and assigned to bob, CRITICAL
    moderators: int  # created by the moderator, unassigned, MEDIUM
    inactive: int  # alice's, inactive: never logged
    deleted: int  # alice's, soft-deleted: never logged

    @property
    def logged(self) -> set[int]:
        return {self.alice_own, self.assigned_to_alice, self.bobs, self.moderators}


def add_task(app: APIFlask, creator: Account, **fields: Any) -> int:
    now = utcnow()
    with app.app_context():
        task = Task(
            task_name=fields.pop("task_name", f"{creator.username}'s task"),
            created_by_id=creator.id,
            created_at=now,
            updated_at=now,
            **fields,
        )
        db.session.add(task)
        db.session.commit()
        return task.id


def log_day(app: APIFlask, day: date = DAY) -> None:
    with app.app_context():
        run = loader.run_inline(day, "test")
        assert run.state.value == "succeeded", run.error


@pytest.fixture
def world(app: APIFlask, admin: Account, moderator: Account, alice: Account, bob: Account) -> World:
    high, low, critical = TaskPriority.HIGH, TaskPriority.LOW, TaskPriority.CRITICAL
    return World(
        admin=admin,
        moderator=moderator,
        alice=alice,
        bob=bob,
        alice_own=add_task(app, alice, task_name="alice plans", priority=high),
        assigned_to_alice=add_task(
            app, admin, task_name="for alice", priority=low, assigned_user_id=alice.id
        ),
        bobs=add_task(app, bob, task_name="bob builds", priority=critical, assigned_user_id=bob.id),
        moderators=add_task(app, moderator, task_name="moderation"),
        inactive=add_task(app, alice, task_name="parked", status=TaskStatus.INACTIVE),
        deleted=add_task(app, alice, task_name="binned", deleted_at=utcnow()),
    )


@pytest.fixture
def logged_world(app: APIFlask, world: World) -> World:
    log_day(app)
    return world


def day_view(
    client: FlaskClient, headers: Headers, day: date | str = DAY, **params: Any
) -> TestResponse:
    return client.get("/tasks", query_string={"date": str(day), **params}, headers=headers)


def ids(response: TestResponse) -> list[int]:
    assert response.status_code == 200, response.json
    return [item["id"] for item in response.json["items"]]


def links(response: TestResponse) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for url, rel in LINK.findall(response.headers.get("Link", "")):
        found[rel] = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    return found


def log_ids(app: APIFlask) -> dict[tuple[int, date], int]:
    with app.app_context():
        return {(e.task_id, e.log_date): e.id for e in db.session.scalars(select(TaskLogEntry))}


def assert_validation_error(response: TestResponse, location: str, field: str) -> None:
    assert response.status_code == 422, response.json
    assert response.json["code"] == 422
    assert field in response.json["errors"][location]


# --- GET /tasks?date= ------------------------------------------------------------------------


def test_the_date_view_lists_the_tasks_logged_that_day_with_their_snapshot(
    app: APIFlask, client: FlaskClient, logged_world: World, login: Login
) -> None:
    w = logged_world
    headers = login(w.admin)
    response = day_view(client, headers, sort="id")

    assert set(ids(response)) == w.logged
    body = response.json
    assert (body["total"], body["page"], body["pages"]) == (4, 1, 1)
    entries = log_ids(app)
    for item in body["items"]:
        assert set(item) == TASK_FIELDS | {"log"}
        task = client.get(f"/task/{item['id']}", headers=headers).json
        assert {k: v for k, v in item.items() if k != "log"} == task
        log = item["log"]
        assert set(log) == LOG_FIELDS
        assert log["log_id"] == entries[(item["id"], DAY)]
        assert log["log_date"] == DAY.isoformat()
        assert (log["status"], log["priority"]) == ("active", task["priority"])
        assert log["assigned_user_id"] == task["assigned_user_id"]
        assert ISO_UTC.match(log["logged_at"]), log["logged_at"]
        logged_at = datetime.fromisoformat(log["logged_at"])
        assert abs(datetime.now(UTC) - logged_at) < timedelta(minutes=1)

    # Without `date`, the ordinary list: no snapshot.
    plain = client.get("/tasks", headers=headers)
    assert plain.status_code == 200
    assert all(item["log"] is None for item in plain.json["items"])


@pytest.mark.parametrize("who", ["admin", "moderator", "alice", "bob"])
def test_the_date_view_is_scoped_like_the_task_list(
    client: FlaskClient, logged_world: World, login: Login, who: str
) -> None:
    w = logged_world
    account: Account = getattr(w, who)
    expected = {
        "admin": w.logged,
        "moderator": w.logged,
        "alice": {w.alice_own, w.assigned_to_alice},
        "bob": {w.bobs},
    }[who]
    headers = login(account)

    assert set(ids(day_view(client, headers))) == expected
    listed = set(ids(client.get("/tasks", headers=headers)))
    assert expected == listed & w.logged


def test_soft_deleted_tasks_in_the_date_view_are_for_admins_only(
    client: FlaskClient, logged_world: World, login: Login
) -> None:
    w = logged_world
    admin, moderator, bob = login(w.admin), login(w.moderator), login(w.bob)
    assert client.delete(f"/task/{w.bobs}", headers=admin).status_code == 204

    assert set(ids(day_view(client, admin))) == w.logged - {w.bobs}
    assert set(ids(day_view(client, admin, deleted="include"))) == w.logged
    assert ids(day_view(client, admin, deleted="only")) == [w.bobs]
    assert set(ids(day_view(client, moderator))) == w.logged - {w.bobs}
    assert ids(day_view(client, bob)) == []
    for headers in (moderator, bob):
        for deleted in ("include", "only"):
            assert day_view(client, headers, deleted=deleted).status_code == 403


def test_status_priority_and_assignee_filters_apply_to_the_snapshot(
    client: FlaskClient, logged_world: World, login: Login
) -> None:
    w = logged_world
    headers = login(w.admin)
    changed = client.put(
        f"/task/{w.assigned_to_alice}",
        json={"priority": "CRITICAL", "status": "inactive", "assigned_user_id": w.bob.id},
        headers=headers,
    )
    assert changed.status_code == 200, changed.json

    low = day_view(client, headers, priority="LOW")
    assert ids(low) == [w.assigned_to_alice]
    [item] = low.json["items"]
    assert (item["priority"], item["status"], item["assigned_user_id"]) == (
        "CRITICAL",
        "inactive",
        w.bob.id,
    )
    assert (item["log"]["priority"], item["log"]["status"], item["log"]["assigned_user_id"]) == (
        "LOW",
        "active",
        w.alice.id,
    )
    assert ids(day_view(client, headers, priority="critical")) == [w.bobs]
    assert ids(day_view(client, headers, status="inactive")) == []
    assert set(ids(day_view(client, headers, status="Active"))) == w.logged
    assert ids(day_view(client, headers, assigned_user=str(w.alice.id))) == [w.assigned_to_alice]
    assert ids(day_view(client, headers, assigned_user=str(w.bob.id))) == [w.bobs]
    assert set(ids(day_view(client, headers, assigned_user="none"))) == {
        w.alice_own,
        w.moderators,
    }
    # The other filters apply to the task itself.
    assert ids(day_view(client, headers, q="BUILDS")) == [w.bobs]
    # The ordinary list filters on the task as it is now.
    now_low = ids(client.get("/tasks", query_string={"priority": "LOW"}, headers=headers))
    assert w.assigned_to_alice not in now_low


def test_the_date_view_is_paginated_with_link_headers(
    app: APIFlask, client: FlaskClient, world: World, login: Login
) -> None:
    for n in range(3):
        add_task(app, world.moderator, task_name=f"extra {n}")
    log_day(app)
    headers = login(world.admin)

    pages = [day_view(client, headers, sort="id", per_page=3, page=p) for p in (1, 2, 3)]

    first, second, beyond = pages
    assert [r.json["total"] for r in pages] == [7, 7, 7]
    assert [r.json["pages"] for r in pages] == [3, 3, 3]
    assert len(ids(first)) == len(ids(second)) == 3
    assert ids(first) == sorted(ids(first)) and ids(first)[-1] < ids(second)[0]
    assert len(ids(beyond)) == 1
    everything = ids(day_view(client, headers, sort="id", per_page=100))
    assert ids(first) + ids(second) + ids(beyond) == everything
    rels = links(first)
    assert set(rels) == {"first", "next", "last"}
    assert rels["next"] == {"date": DAY.isoformat(), "sort": "id", "per_page": "3", "page": "2"}
    assert rels["last"]["page"] == "3"
    assert set(links(second)) == {"first", "prev", "next", "last"}
    assert ids(day_view(client, headers, per_page=3, page=9)) == []


def test_a_day_without_a_log_lists_nothing(
    client: FlaskClient, logged_world: World, login: Login
) -> None:
    response = day_view(client, login(logged_world.admin), DAY + timedelta(days=1))
    assert response.status_code == 200
    assert response.json["items"] == []
    assert (response.json["total"], response.json["pages"]) == (0, 0)


@pytest.mark.parametrize("value", ["2030-02-30", "14-03-2030", "yesterday", "2030-3-14x", ""])
def test_a_malformed_date_is_refused(
    client: FlaskClient, admin: Account, login: Login, value: str
) -> None:
    assert_validation_error(day_view(client, login(admin), value), "query", "date")


def test_the_date_view_needs_a_token(client: FlaskClient) -> None:
    assert client.get("/tasks", query_string={"date": DAY.isoformat()}).status_code == 401


# --- GET /logs/<id> --------------------------------------------------------------------------


def test_one_log_entry_is_visible_to_whoever_sees_its_task(
    app: APIFlask, client: FlaskClient, logged_world: World, login: Login
) -> None:
    w = logged_world
    entries = log_ids(app)
    alices = entries[(w.assigned_to_alice, DAY)]

    for account in (w.alice, w.moderator, w.admin):
        response = client.get(f"/logs/{alices}", headers=login(account))
        assert response.status_code == 200, response.json
        body = response.json
        assert body["id"] == w.assigned_to_alice
        assert set(body) == TASK_FIELDS | {"log"}
        assert body["log"]["log_id"] == alices
        assert body["log"]["log_date"] == DAY.isoformat()
        assert body["log"]["priority"] == "LOW"
    assert client.get(f"/logs/{alices}", headers=login(w.bob)).status_code == 404
    assert client.get(f"/logs/{max(entries.values()) + 1}", headers=login(w.admin)).status_code == (
        404
    )
    assert client.get(f"/logs/{alices}").status_code == 401


def test_the_log_entry_of_a_soft_deleted_task_is_for_admins_only(
    app: APIFlask, client: FlaskClient, logged_world: World, login: Login
) -> None:
    w = logged_world
    entry = log_ids(app)[(w.moderators, DAY)]
    assert client.delete(f"/task/{w.moderators}", headers=login(w.admin)).status_code == 204

    assert client.get(f"/logs/{entry}", headers=login(w.admin)).status_code == 200
    assert client.get(f"/logs/{entry}", headers=login(w.moderator)).status_code == 404


# --- GET /task/<id>/logs ---------------------------------------------------------------------


def test_a_tasks_log_is_newest_first_and_paginated(
    app: APIFlask, client: FlaskClient, world: World, login: Login
) -> None:
    days = [DAY - timedelta(days=2), DAY, DAY - timedelta(days=1)]  # logged out of order
    for day in days:
        log_day(app, day)
    headers = login(world.alice)
    url = f"/task/{world.alice_own}/logs"

    first = client.get(url, query_string={"per_page": 2}, headers=headers)
    second = client.get(url, query_string={"per_page": 2, "page": 2}, headers=headers)

    assert first.status_code == second.status_code == 200
    items = first.json["items"] + second.json["items"]
    assert [i["log_date"] for i in items] == [
        (DAY - timedelta(days=d)).isoformat() for d in range(3)
    ]
    assert (first.json["total"], first.json["pages"]) == (3, 2)
    entries = log_ids(app)
    for item in items:
        assert set(item) == LOG_FIELDS
        assert item["log_id"] == entries[(world.alice_own, date.fromisoformat(item["log_date"]))]
        assert (item["status"], item["priority"], item["assigned_user_id"]) == (
            "active",
            "HIGH",
            None,
        )
    assert links(first)["next"]["page"] == "2"
    assert set(links(second)) == {"first", "prev", "last"}

    never_logged = client.get(f"/task/{world.inactive}/logs", headers=headers)
    assert never_logged.status_code == 200
    assert never_logged.json["items"] == []


def test_a_tasks_log_is_hidden_with_the_task(
    client: FlaskClient, logged_world: World, login: Login
) -> None:
    w = logged_world
    assert client.get(f"/task/{w.alice_own}/logs", headers=login(w.bob)).status_code == 404
    assert client.get("/task/999999/logs", headers=login(w.admin)).status_code == 404
    assert client.get(f"/task/{w.deleted}/logs", headers=login(w.moderator)).status_code == 404
    assert client.get(f"/task/{w.deleted}/logs", headers=login(w.admin)).status_code == 200
    assert client.get(f"/task/{w.alice_own}/logs").status_code == 401
    bad_page = client.get(
        f"/task/{w.alice_own}/logs", query_string={"per_page": 0}, headers=login(w.alice)
    )
    assert_validation_error(bad_page, "query", "per_page")


# --- POST /admin/jobs/daily-log and GET /admin/jobs/<id> --------------------------------------


@pytest.fixture
def small_chunks(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> int:
    settings = app.config["SETTINGS"]
    monkeypatch.setitem(
        app.config, "SETTINGS", settings.model_copy(update={"loader_chunk_size": 2})
    )
    return 2


def start_job(client: FlaskClient, headers: Headers, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/admin/jobs/daily-log", json=body, headers=headers)
    assert response.status_code == 202, response.json
    accepted = response.json
    assert set(accepted) == {"job_id", "state", "status_url"}
    assert accepted["state"] in {"queued", "running", "succeeded"}
    assert accepted["status_url"] == f"/admin/jobs/{accepted['job_id']}"
    assert response.headers["Location"].endswith(accepted["status_url"])
    uuid.UUID(accepted["job_id"])
    status = client.get(accepted["status_url"], headers=headers)
    assert status.status_code == 200, status.json
    return dict(status.json)


def test_the_daily_log_job_logs_the_day_and_reports_its_progress(
    app: APIFlask, client: FlaskClient, world: World, login: Login, small_chunks: int
) -> None:
    job = start_job(client, login(world.admin), {"date": DAY.isoformat()})

    chunk_count = -(-(world.moderators - world.alice_own + 1) // small_chunks)
    assert job["kind"] == "daily_log"
    assert job["state"] == "succeeded"
    assert job["params"] == {"date": DAY.isoformat()}
    assert job["progress"] == {"done": chunk_count, "total": chunk_count}
    assert job["result"]["rows_logged"] == 4
    assert job["result"]["rows_skipped"] == 0
    assert job["result"]["dates"] == [DAY.isoformat()]
    assert job["error"] is None
    assert job["finished_at"] is not None and job["created_at"] <= job["finished_at"]
    [run] = job["runs"]
    assert job["result"]["run_ids"] == [run["id"]]
    assert (run["state"], run["trigger"], run["job_id"]) == ("succeeded", "api", job["job_id"])
    assert (run["log_date"], run["rows_eligible"], run["rows_logged"]) == (DAY.isoformat(), 4, 4)
    assert {task for task, day in log_ids(app) if day == DAY} == world.logged

    again = start_job(client, login(world.admin), {"date": DAY.isoformat()})
    assert again["state"] == "succeeded"
    assert (again["result"]["rows_logged"], again["result"]["rows_skipped"]) == (0, 4)
    assert len(log_ids(app)) == 4


def test_the_daily_log_job_without_a_date_logs_today_once(
    app: APIFlask, client: FlaskClient, world: World, login: Login
) -> None:
    headers = login(world.admin)
    today = datetime.now(UTC).date()

    job = start_job(client, headers, {})
    assert job["state"] == "succeeded"
    assert job["params"] == {"date": None}
    assert job["result"]["dates"] == [today.isoformat()]
    assert job["result"]["rows_logged"] == 4
    assert {task for task, day in log_ids(app) if day == today} == world.logged

    # Today is done: the next job has nothing to run.
    idle = start_job(client, headers, {"date": None})
    assert idle["state"] == "succeeded"
    assert idle["runs"] == []
    assert idle["result"] == {"run_ids": [], "dates": []}
    assert len(log_ids(app)) == 4


def test_the_daily_log_job_catches_up_missed_days(
    app: APIFlask, client: FlaskClient, world: World, login: Login
) -> None:
    today = datetime.now(UTC).date()
    log_day(app, today - timedelta(days=3))

    job = start_job(client, login(world.admin), {})

    missed = [today - timedelta(days=d) for d in (2, 1, 0)]
    assert job["state"] == "succeeded"
    assert job["result"]["dates"] == [d.isoformat() for d in missed]
    assert [r["log_date"] for r in job["runs"]] == [d.isoformat() for d in missed]
    assert job["result"]["rows_logged"] == 12
    assert len(log_ids(app)) == 16


def test_daily_log_jobs_are_for_admins_only(
    client: FlaskClient, world: World, login: Login, app: APIFlask
) -> None:
    job_id = start_job(client, login(world.admin), {"date": DAY.isoformat()})["job_id"]
    for account, reading in ((world.moderator, 404), (world.alice, 403)):
        headers = login(account)
        posted = client.post("/admin/jobs/daily-log", json={}, headers=headers)
        assert posted.status_code == 403
        # A moderator may follow its own jobs (CSV imports) but not an admin's: not found.
        assert client.get(f"/admin/jobs/{job_id}", headers=headers).status_code == reading
    assert client.post("/admin/jobs/daily-log", json={}).status_code == 401
    assert client.get(f"/admin/jobs/{job_id}").status_code == 401
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LoaderRun)) == 1


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-job"])
def test_an_unknown_job_is_404(
    client: FlaskClient, admin: Account, login: Login, job_id: str
) -> None:
    response = client.get(f"/admin/jobs/{job_id}", headers=login(admin))
    assert response.status_code == 404
    assert response.json["code"] == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"date": DAY.isoformat(), "force": True}, "force", id="unknown-field"),
        pytest.param({"date": "2030-02-30"}, "date", id="bad-date"),
        pytest.param({"date": 20300314}, "date", id="not-a-date"),
    ],
)
def test_a_daily_log_job_with_a_bad_body_is_refused(
    app: APIFlask, client: FlaskClient, admin: Account, login: Login, body: Any, field: str
) -> None:
    response = client.post("/admin/jobs/daily-log", json=body, headers=login(admin))
    assert_validation_error(response, "json", field)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LoaderRun)) == 0


# --- GET /admin/dashboard --------------------------------------------------------------------


def test_the_dashboard_shows_loader_runs_and_rows_logged_per_day(
    app: APIFlask, client: FlaskClient, world: World, login: Login
) -> None:
    today = datetime.now(UTC).date()
    for day in (today - timedelta(days=20), today - timedelta(days=2), today, today):
        log_day(app, day)

    body = client.get("/admin/dashboard", headers=login(world.admin)).json

    runs = body["loader_runs"]
    assert [r["id"] for r in runs] == sorted((r["id"] for r in runs), reverse=True)
    assert [(r["log_date"], r["rows_logged"], r["rows_skipped"]) for r in runs] == [
        (today.isoformat(), 0, 4),
        (today.isoformat(), 4, 0),
        ((today - timedelta(days=2)).isoformat(), 4, 0),
        ((today - timedelta(days=20)).isoformat(), 4, 0),
    ]
    assert all(r["state"] == "succeeded" and r["trigger"] == "test" for r in runs)
    per_day = body["rows_logged_per_day"]
    assert [d["date"] for d in per_day] == [
        (today - timedelta(days=n)).isoformat() for n in range(13, -1, -1)
    ]
    counts = {d["date"]: d["count"] for d in per_day}
    assert counts.pop(today.isoformat()) == 4
    assert counts.pop((today - timedelta(days=2)).isoformat()) == 4
    assert set(counts.values()) == {0}
