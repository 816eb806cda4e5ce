"""Tasks end to end: CRUD, validation, partial update and audit trail, soft delete and restore,
every list filter, sorting, pagination and the JSON/timestamp format of the answers."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import StatementError
from werkzeug.test import TestResponse

from app.extensions import db
from app.models import Task, TaskAuditEntry
from tests.conftest import Account

Login = Callable[[Account], dict[str, str]]
Headers = dict[str, str]

ISO_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$")
LINK = re.compile(r'<([^>]+)>;\s*rel="([a-z]+)"')
EDITABLE = ("task_name", "description", "status", "priority", "assigned_user_id", "due_date")


# --- helpers ---------------------------------------------------------------------------------


def create(client: FlaskClient, headers: Headers, **fields: Any) -> dict[str, Any]:
    body = {"task_name": "A task", **fields}
    response = client.post("/task", json=body, headers=headers)
    assert response.status_code == 201, response.json
    return dict(response.json)


def set_created_at(app: APIFlask, task_id: int, when: datetime) -> None:
    assert when.tzinfo is not None
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task is not None
        task.created_at = when
        db.session.commit()


def row(app: APIFlask, task_id: int) -> dict[str, Any] | None:
    with app.app_context():
        task = db.session.get(Task, task_id)
        if task is None:
            return None
        return {attr.key: getattr(task, attr.key) for attr in inspect(Task).column_attrs}


def audit_rows(app: APIFlask, task_id: int | None = None) -> list[tuple[Any, ...]]:
    with app.app_context():
        stmt = select(TaskAuditEntry).order_by(TaskAuditEntry.id)
        if task_id is not None:
            stmt = stmt.where(TaskAuditEntry.task_id == task_id)
        return [
            (e.id, e.task_id, e.actor_id, e.action.value, e.changes)
            for e in db.session.scalars(stmt)
        ]


def task_count(app: APIFlask) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(Task)) or 0)


def ids(response: TestResponse) -> list[int]:
    assert response.status_code == 200, response.json
    return [item["id"] for item in response.json["items"]]


def names(response: TestResponse) -> list[str]:
    assert response.status_code == 200, response.json
    return [item["task_name"] for item in response.json["items"]]


def links(response: TestResponse) -> dict[str, dict[str, str]]:
    """rel -> the link's query parameters (single-valued)."""
    result: dict[str, dict[str, str]] = {}
    for url, rel in LINK.findall(response.headers.get("Link", "")):
        parts = urlsplit(url)
        assert parts.path == "/tasks" or parts.path.endswith("/history"), url
        result[rel] = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return result


def assert_validation_error(response: TestResponse, location: str, *fields: str) -> None:
    assert response.status_code == 422, response.json
    assert response.is_json
    body = response.json
    assert body["code"] == 422
    assert body["message"] == "Unprocessable Entity"
    assert isinstance(body["description"], str) and body["description"]
    assert set(body["errors"]) == {location}
    assert set(body["errors"][location]) == set(fields)
    for messages in body["errors"][location].values():
        assert isinstance(messages, list) and messages
        assert all(isinstance(m, str) and m for m in messages)


def assert_utc_timestamp(value: str) -> datetime:
    assert ISO_TIMESTAMP.match(value), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


@pytest.fixture
def admin_headers(login: Login, admin: Account) -> Headers:
    return login(admin)


@pytest.fixture
def alice_headers(login: Login, alice: Account) -> Headers:
    return login(alice)


# --- create and read -------------------------------------------------------------------------


def test_create_returns_201_location_and_defaults(
    app: APIFlask, client: FlaskClient, alice: Account, alice_headers: Headers
) -> None:
    response = client.post("/task", json={"task_name": "  Data Backup  "}, headers=alice_headers)
    assert response.status_code == 201
    assert response.mimetype == "application/json"
    body = response.json
    assert response.headers["Location"].endswith(f"/task/{body['id']}")
    assert body["task_name"] == "Data Backup"  # surrounding whitespace is stripped
    assert body["description"] is None
    assert body["status"] == "active"
    assert body["priority"] == "MEDIUM"
    assert body["assigned_user_id"] is None
    assert body["due_date"] is None
    assert body["deleted_at"] is None
    assert body["created_by_id"] == alice.id
    assert body["created_at"] == body["updated_at"]
    created_at = assert_utc_timestamp(body["created_at"])
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)

    fetched = client.get(response.headers["Location"], headers=alice_headers)
    assert fetched.status_code == 200
    assert fetched.json == body

    stored = row(app, body["id"])
    assert stored is not None
    assert stored["task_name"] == "Data Backup"
    assert stored["created_by_id"] == alice.id
    assert stored["created_at"].utcoffset() == timedelta(0)
    assert stored["created_at"] == created_at


def test_a_created_entry_lists_only_the_fields_the_task_has(
    client: FlaskClient, alice_headers: Headers
) -> None:
    body = create(client, alice_headers, task_name="Just a name")
    history = client.get(f"/task/{body['id']}/history", headers=alice_headers)
    [entry] = history.json["items"]
    # No `null -> null` for the description, assignee and due date it was not given.
    assert entry["changes"] == {
        "task_name": {"old": None, "new": "Just a name"},
        "status": {"old": None, "new": "active"},
        "priority": {"old": None, "new": "MEDIUM"},
    }


def test_create_with_every_field_is_audited_as_created(
    app: APIFlask, client: FlaskClient, alice: Account, alice_headers: Headers
) -> None:
    body = create(
        client,
        alice_headers,
        task_name="Release",
        description="Ship v2",
        status="Inactive",  # status and priority are case-insensitive
        priority="critical",
        assigned_user_id=alice.id,
        due_date="2030-01-31",
    )
    assert body["priority"] == "CRITICAL"
    assert body["status"] == "inactive"
    assert body["due_date"] == "2030-01-31"
    assert body["assigned_user_id"] == alice.id

    history = client.get(f"/task/{body['id']}/history", headers=alice_headers)
    assert history.status_code == 200
    [entry] = history.json["items"]
    assert entry["action"] == "created"
    assert entry["actor_id"] == alice.id
    assert entry["task_id"] == body["id"]
    assert_utc_timestamp(entry["created_at"])
    assert entry["changes"] == {
        "task_name": {"old": None, "new": "Release"},
        "description": {"old": None, "new": "Ship v2"},
        "status": {"old": None, "new": "inactive"},
        "priority": {"old": None, "new": "CRITICAL"},
        "assigned_user_id": {"old": None, "new": alice.id},
        "due_date": {"old": None, "new": "2030-01-31"},
    }
    assert [r[3] for r in audit_rows(app, body["id"])] == ["created"]


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        pytest.param({}, ["task_name"], id="missing-name"),
        pytest.param({"task_name": ""}, ["task_name"], id="empty-name"),
        pytest.param({"task_name": "   "}, ["task_name"], id="blank-name"),
        pytest.param({"task_name": "x" * 256}, ["task_name"], id="long-name"),
        pytest.param({"task_name": 42}, ["task_name"], id="number-name"),
        pytest.param({"task_name": None}, ["task_name"], id="null-name"),
        pytest.param({"task_name": "t", "description": "d" * 10_001}, ["description"], id="desc"),
        pytest.param({"task_name": "t", "status": "done"}, ["status"], id="status"),
        pytest.param({"task_name": "t", "priority": "urgent"}, ["priority"], id="priority"),
        pytest.param({"task_name": "t", "due_date": "2024-02-30"}, ["due_date"], id="due-date"),
        pytest.param({"task_name": "t", "due_date": "tomorrow"}, ["due_date"], id="due-text"),
        pytest.param({"task_name": "t", "assigned_user_id": 0}, ["assigned_user_id"], id="uid-0"),
        pytest.param(
            {"task_name": "t", "assigned_user_id": -3}, ["assigned_user_id"], id="uid-neg"
        ),
        pytest.param(
            {"task_name": "t", "assigned_user_id": "me"}, ["assigned_user_id"], id="uid-s"
        ),
        pytest.param(
            {"task_name": "t", "assigned_user_id": 2**31}, ["assigned_user_id"], id="uid-huge"
        ),
        pytest.param({"task_name": "t", "id": 7}, ["id"], id="extra-id"),
        pytest.param({"task_name": "t", "created_by_id": 1}, ["created_by_id"], id="extra-creator"),
        pytest.param(
            {"task_name": "t", "deleted_at": "2024-01-01T00:00:00Z"}, ["deleted_at"], id="extra-del"
        ),
        pytest.param({"status": "x", "priority": "y"}, ["task_name", "status", "priority"], id="3"),
    ],
)
def test_create_validation_errors_are_reported_per_field(
    app: APIFlask,
    client: FlaskClient,
    admin_headers: Headers,
    payload: dict[str, Any],
    fields: list[str],
) -> None:
    response = client.post("/task", json=payload, headers=admin_headers)
    assert_validation_error(response, "json", *fields)
    assert task_count(app) == 0
    assert audit_rows(app) == []


def test_create_refuses_non_json_bodies(
    app: APIFlask, client: FlaskClient, admin_headers: Headers
) -> None:
    wrong_type = client.post("/task", data="task_name=x", headers=admin_headers)
    assert wrong_type.status_code == 415
    assert wrong_type.json["code"] == 415
    broken = client.post(
        "/task", data="{not json", content_type="application/json", headers=admin_headers
    )
    assert broken.status_code == 400
    assert broken.json["code"] == 400
    assert task_count(app) == 0


def test_get_missing_task_is_a_json_404(client: FlaskClient, admin_headers: Headers) -> None:
    response = client.get("/task/424242", headers=admin_headers)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.json == {
        "code": 404,
        "message": "Not Found",
        "description": "task not found",
    }


# --- partial update and the audit trail ------------------------------------------------------


@pytest.fixture
def full_task(client: FlaskClient, admin_headers: Headers, alice: Account) -> dict[str, Any]:
    return create(
        client,
        admin_headers,
        task_name="Backup",
        description="Nightly backup",
        status="active",
        priority="HIGH",
        assigned_user_id=alice.id,
        due_date="2030-06-01",
    )


def test_put_changes_only_the_sent_field_and_audits_it(
    app: APIFlask,
    client: FlaskClient,
    admin: Account,
    admin_headers: Headers,
    full_task: dict[str, Any],
) -> None:
    task_id = full_task["id"]
    before = row(app, task_id)
    response = client.put(
        f"/task/{task_id}", json={"description": "Weekly backup"}, headers=admin_headers
    )
    assert response.status_code == 200
    body = response.json
    unchanged = set(full_task) - {"description", "updated_at"}
    assert {k: body[k] for k in unchanged} == {k: full_task[k] for k in unchanged}
    assert body["description"] == "Weekly backup"
    assert assert_utc_timestamp(body["updated_at"]) > assert_utc_timestamp(full_task["updated_at"])

    after = row(app, task_id)
    assert before is not None and after is not None
    assert {k for k in before if before[k] != after[k]} == {"description", "updated_at", "version"}

    history = client.get(f"/task/{task_id}/history", headers=admin_headers).json["items"]
    assert [e["action"] for e in history] == ["updated", "created"]
    assert history[0]["actor_id"] == admin.id
    assert history[0]["changes"] == {
        "description": {"old": "Nightly backup", "new": "Weekly backup"}
    }


def test_put_several_fields_audits_old_and_new_values(
    app: APIFlask,
    client: FlaskClient,
    moderator: Account,
    login: Login,
    bob: Account,
    alice: Account,
    full_task: dict[str, Any],
) -> None:
    headers = login(moderator)
    response = client.put(
        f"/task/{full_task['id']}",
        json={
            "task_name": "Backup v2",
            "status": "inactive",
            "priority": "low",
            "assigned_user_id": bob.id,
            "due_date": "2030-07-15",
        },
        headers=headers,
    )
    assert response.status_code == 200
    assert response.json["priority"] == "LOW"
    assert response.json["description"] == "Nightly backup"
    entries = audit_rows(app, full_task["id"])
    assert [e[3] for e in entries] == ["created", "updated"]
    assert entries[-1][2] == moderator.id
    assert entries[-1][4] == {
        "task_name": {"old": "Backup", "new": "Backup v2"},
        "status": {"old": "active", "new": "inactive"},
        "priority": {"old": "HIGH", "new": "LOW"},
        "assigned_user_id": {"old": alice.id, "new": bob.id},
        "due_date": {"old": "2030-06-01", "new": "2030-07-15"},
    }
    stored = row(app, full_task["id"])
    assert stored is not None
    assert stored["due_date"] == date(2030, 7, 15)
    assert stored["assigned_user_id"] == bob.id


def test_put_can_clear_nullable_fields(
    app: APIFlask,
    client: FlaskClient,
    admin_headers: Headers,
    alice: Account,
    full_task: dict[str, Any],
) -> None:
    response = client.put(
        f"/task/{full_task['id']}",
        json={"description": None, "assigned_user_id": None, "due_date": None},
        headers=admin_headers,
    )
    assert response.status_code == 200
    assert response.json["description"] is None
    assert response.json["assigned_user_id"] is None
    assert response.json["due_date"] is None
    assert audit_rows(app, full_task["id"])[-1][4] == {
        "description": {"old": "Nightly backup", "new": None},
        "assigned_user_id": {"old": alice.id, "new": None},
        "due_date": {"old": "2030-06-01", "new": None},
    }


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="empty"),
        pytest.param({"task_name": "Backup", "priority": "high", "status": "active"}, id="same"),
        pytest.param({"due_date": "2030-06-01", "description": "Nightly backup"}, id="same-2"),
    ],
)
def test_put_without_real_changes_is_not_audited(
    app: APIFlask,
    client: FlaskClient,
    admin_headers: Headers,
    full_task: dict[str, Any],
    payload: dict[str, Any],
) -> None:
    before, before_audit = row(app, full_task["id"]), audit_rows(app)
    response = client.put(f"/task/{full_task['id']}", json=payload, headers=admin_headers)
    assert response.status_code == 200
    assert response.json == full_task
    assert row(app, full_task["id"]) == before
    assert audit_rows(app) == before_audit


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        pytest.param({"task_name": None}, ["task_name"], id="null-name"),
        pytest.param({"status": None}, ["status"], id="null-status"),
        pytest.param({"priority": None}, ["priority"], id="null-priority"),
        pytest.param({"task_name": "  "}, ["task_name"], id="blank-name"),
        pytest.param({"priority": "urgent"}, ["priority"], id="bad-priority"),
        pytest.param({"due_date": "31/12/2030"}, ["due_date"], id="bad-date"),
        pytest.param({"id": 99}, ["id"], id="id"),
        pytest.param({"created_by_id": 1}, ["created_by_id"], id="created_by_id"),
        pytest.param({"deleted_at": None}, ["deleted_at"], id="deleted_at"),
        pytest.param({"created_at": "2020-01-01T00:00:00Z"}, ["created_at"], id="created_at"),
        pytest.param(
            {"task_name": "ok", "updated_at": "2020-01-01T00:00:00Z", "id": 1},
            ["updated_at", "id"],
            id="two-unknown",
        ),
        pytest.param({"assigned_user_id": 987_654}, ["assigned_user_id"], id="unknown-user"),
    ],
)
def test_put_validation_errors_change_nothing(
    app: APIFlask,
    client: FlaskClient,
    admin_headers: Headers,
    full_task: dict[str, Any],
    payload: dict[str, Any],
    fields: list[str],
) -> None:
    before, before_audit = row(app, full_task["id"]), audit_rows(app)
    response = client.put(f"/task/{full_task['id']}", json=payload, headers=admin_headers)
    assert_validation_error(response, "json", *fields)
    assert row(app, full_task["id"]) == before
    assert audit_rows(app) == before_audit


# --- soft delete, restore, history, purge ----------------------------------------------------


def test_soft_delete_restore_and_history(
    app: APIFlask,
    client: FlaskClient,
    login: Login,
    admin: Account,
    moderator: Account,
    alice: Account,
    admin_headers: Headers,
    alice_headers: Headers,
) -> None:
    mod_headers = login(moderator)
    task = create(client, alice_headers, task_name="Archive logs")
    task_id = task["id"]
    updated = client.put(f"/task/{task_id}", json={"priority": "HIGH"}, headers=mod_headers)
    assert updated.status_code == 200

    deleted = client.delete(f"/task/{task_id}", headers=mod_headers)
    assert deleted.status_code == 204
    assert deleted.data == b""
    stored = row(app, task_id)
    assert stored is not None  # soft: the row is still there
    assert stored["deleted_at"] is not None
    assert stored["deleted_at"].utcoffset() == timedelta(0)

    assert client.get(f"/task/{task_id}", headers=alice_headers).status_code == 404
    assert client.get(f"/task/{task_id}", headers=mod_headers).status_code == 404
    assert ids(client.get("/tasks", headers=alice_headers)) == []
    assert ids(client.get("/tasks", headers=admin_headers)) == []
    assert ids(client.get("/tasks?deleted=only", headers=admin_headers)) == [task_id]
    seen = client.get(f"/task/{task_id}", headers=admin_headers)
    assert seen.status_code == 200
    assert assert_utc_timestamp(seen.json["deleted_at"]) == stored["deleted_at"]

    # Deleting again: the admin sees the task and is told it is already deleted, the moderator
    # cannot see it at all.
    assert client.delete(f"/task/{task_id}", headers=admin_headers).status_code == 409
    assert client.delete(f"/task/{task_id}", headers=mod_headers).status_code == 404

    restored = client.post(f"/task/{task_id}/restore", headers=admin_headers)
    assert restored.status_code == 200
    assert restored.json["deleted_at"] is None
    assert restored.json["priority"] == "HIGH"
    assert client.post(f"/task/{task_id}/restore", headers=admin_headers).status_code == 409
    assert client.get(f"/task/{task_id}", headers=alice_headers).status_code == 200
    assert ids(client.get("/tasks?deleted=only", headers=admin_headers)) == []

    history = client.get(f"/task/{task_id}/history", headers=alice_headers)
    assert history.status_code == 200
    entries = history.json["items"]
    assert [(e["action"], e["actor_id"]) for e in entries] == [
        ("restored", admin.id),
        ("deleted", moderator.id),
        ("updated", moderator.id),
        ("created", alice.id),
    ]
    assert entries[2]["changes"] == {"priority": {"old": "MEDIUM", "new": "HIGH"}}
    deleted_at = entries[1]["changes"]["deleted_at"]
    assert deleted_at["old"] is None
    assert datetime.fromisoformat(deleted_at["new"]) == stored["deleted_at"]
    assert entries[0]["changes"] == {"deleted_at": {"old": deleted_at["new"], "new": None}}
    for entry in entries:
        assert_utc_timestamp(entry["created_at"])
    assert history.json["total"] == 4

    # The trail is paginated too.
    page = client.get(f"/task/{task_id}/history?per_page=3&page=2", headers=alice_headers)
    assert [e["action"] for e in page.json["items"]] == ["created"]
    assert page.json["pages"] == 2
    assert set(links(page)) == {"first", "prev", "last"}


def test_purge_removes_the_row_and_its_audit_trail_only(
    app: APIFlask, client: FlaskClient, admin_headers: Headers, alice_headers: Headers
) -> None:
    doomed = create(client, alice_headers, task_name="Doomed")
    kept = create(client, alice_headers, task_name="Kept")
    updated = client.put(
        f"/task/{doomed['id']}", json={"status": "inactive"}, headers=alice_headers
    )
    assert updated.status_code == 200
    assert client.delete(f"/task/{doomed['id']}", headers=admin_headers).status_code == 204
    assert len(audit_rows(app, doomed["id"])) == 3
    kept_audit = audit_rows(app, kept["id"])

    response = client.delete(f"/admin/tasks/{doomed['id']}", headers=admin_headers)
    assert response.status_code == 204
    assert row(app, doomed["id"]) is None
    assert audit_rows(app, doomed["id"]) == []
    assert audit_rows(app) == kept_audit
    assert row(app, kept["id"]) is not None
    assert client.get(f"/task/{doomed['id']}", headers=admin_headers).status_code == 404
    assert client.delete(f"/admin/tasks/{doomed['id']}", headers=admin_headers).status_code == 404


def test_purge_of_a_live_task_cascades_in_the_database(
    app: APIFlask, client: FlaskClient, admin_headers: Headers
) -> None:
    task = create(client, admin_headers)
    assert client.delete(f"/admin/tasks/{task['id']}", headers=admin_headers).status_code == 204
    with app.app_context():
        remaining = db.session.scalar(
            select(func.count())
            .select_from(TaskAuditEntry)
            .where(TaskAuditEntry.task_id == task["id"])
        )
    assert remaining == 0
    assert task_count(app) == 0


# --- list filters ----------------------------------------------------------------------------


@pytest.fixture
def catalogue(
    client: FlaskClient, admin_headers: Headers, alice: Account, bob: Account
) -> dict[str, Any]:
    """Four tasks with distinct filterable fields, created by the admin."""
    create(
        client,
        admin_headers,
        task_name="Backup database",
        description="nightly",
        status="active",
        priority="HIGH",
        assigned_user_id=alice.id,
        due_date="2024-05-01",
    )
    create(
        client,
        admin_headers,
        task_name="Write report",
        description="Q2 numbers",
        status="inactive",
        priority="LOW",
        assigned_user_id=bob.id,
        due_date="2024-05-10",
    )
    create(client, admin_headers, task_name="Deploy", status="active", priority="CRITICAL")
    create(
        client,
        admin_headers,
        task_name="Review BACKUP logs",
        description="check",
        status="inactive",
        priority="MEDIUM",
        assigned_user_id=alice.id,
        due_date="2024-05-31",
    )
    return {"alice": alice.id, "bob": bob.id}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"Backup database", "Write report", "Deploy", "Review BACKUP logs"}),
        ("status=active", {"Backup database", "Deploy"}),
        ("status=inactive", {"Write report", "Review BACKUP logs"}),
        ("priority=HIGH", {"Backup database"}),
        ("priority=high", {"Backup database"}),
        ("priority=Critical", {"Deploy"}),
        ("assigned_user={alice}", {"Backup database", "Review BACKUP logs"}),
        ("assigned_user={bob}", {"Write report"}),
        ("assigned_user=none", {"Deploy"}),
        ("assigned_user=987654", set()),
        ("q=backup", {"Backup database", "Review BACKUP logs"}),
        ("q=BaCkUp", {"Backup database", "Review BACKUP logs"}),
        ("q=numbers", {"Write report"}),  # description
        ("q=NIGHT", {"Backup database"}),
        ("q=zzz", set()),
        ("due_from=2024-05-10", {"Write report", "Review BACKUP logs"}),
        ("due_to=2024-05-10", {"Backup database", "Write report"}),
        ("due_from=2024-05-02&due_to=2024-05-30", {"Write report"}),
        ("due_from=2024-05-31&due_to=2024-05-31", {"Review BACKUP logs"}),
        ("status=inactive&assigned_user={alice}", {"Review BACKUP logs"}),
        ("priority=low&q=report", {"Write report"}),
        ("priority=low&q=backup", set()),
    ],
)
def test_list_filters(
    client: FlaskClient,
    admin_headers: Headers,
    catalogue: dict[str, Any],
    query: str,
    expected: set[str],
) -> None:
    response = client.get(f"/tasks?{query.format(**catalogue)}", headers=admin_headers)
    assert set(names(response)) == expected
    assert response.json["total"] == len(expected)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("priority=urgent", "priority"),
        ("assigned_user=0", "assigned_user"),
        ("assigned_user=-1", "assigned_user"),
        ("assigned_user=abc", "assigned_user"),
        ("assigned_user=99999999999999999", "assigned_user"),
        ("q=", "q"),
        ("q=" + "x" * 201, "q"),
        ("created_from=2024-02-30", "created_from"),
        ("created_to=yesterday", "created_to"),
        ("due_from=2024-13-01", "due_from"),
        ("deleted=maybe", "deleted"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=99999999999999999999", "page"),
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("per_page=ten", "per_page"),
        ("colour=red", "colour"),
        ("status=active&per_page=20&limit=5", "limit"),
    ],
)
def test_list_rejects_invalid_query_parameters(
    client: FlaskClient, admin_headers: Headers, query: str, field: str
) -> None:
    assert_validation_error(client.get(f"/tasks?{query}", headers=admin_headers), "query", field)


@pytest.mark.parametrize(
    "query",
    ["created_from=2024-03-11&created_to=2024-03-10", "due_from=2024-05-02&due_to=2024-05-01"],
)
def test_list_rejects_reversed_date_ranges(
    client: FlaskClient, admin_headers: Headers, query: str
) -> None:
    response = client.get(f"/tasks?{query}", headers=admin_headers)
    assert response.status_code == 422
    assert list(response.json["errors"]) == ["query"]


def test_search_treats_like_wildcards_literally(
    client: FlaskClient, admin_headers: Headers
) -> None:
    for name in ("100% done", "1000 done", "snake_case", "snakeXcase", "a/b path", "ab path"):
        create(client, admin_headers, task_name=name)
    create(client, admin_headers, task_name="plain", description="back\\slash")
    create(client, admin_headers, task_name="other", description="backslash")
    expected = {
        "%": ["100% done"],
        "0%": ["100% done"],
        "_": ["snake_case"],
        "e_c": ["snake_case"],
        "a/b": ["a/b path"],
        "/": ["a/b path"],
        "\\": ["plain"],
        "k\\s": ["plain"],
        "done": ["100% done", "1000 done"],
    }
    for q, wanted in expected.items():
        response = client.get("/tasks", query_string={"q": q, "sort": "id"}, headers=admin_headers)
        assert names(response) == wanted, q


def test_created_range_is_inclusive_whole_utc_days(
    app: APIFlask, client: FlaskClient, admin_headers: Headers
) -> None:
    plus5 = timezone(timedelta(hours=5))
    stamps = {
        "before": datetime(2024, 3, 9, 23, 59, 59, 999_999, tzinfo=UTC),
        "first-instant": datetime(2024, 3, 10, 0, 0, 0, tzinfo=UTC),
        # 01:00 at UTC+5 is still 9 March in UTC: outside the range.
        "offset-before": datetime(2024, 3, 10, 1, 0, 0, tzinfo=plus5),
        # 04:00 at UTC-3 on the 11th is 07:00 UTC on the 11th: inside.
        "offset-inside": datetime(2024, 3, 11, 4, 0, 0, tzinfo=timezone(timedelta(hours=-3))),
        "last-instant": datetime(2024, 3, 11, 23, 59, 59, 999_999, tzinfo=UTC),
        "after": datetime(2024, 3, 12, 0, 0, 0, tzinfo=UTC),
    }
    for name, when in stamps.items():
        set_created_at(app, create(client, admin_headers, task_name=name)["id"], when)

    def query(params: str) -> set[str]:
        return set(names(client.get(f"/tasks?{params}", headers=admin_headers)))

    inside = {"first-instant", "offset-inside", "last-instant"}
    assert query("created_from=2024-03-10&created_to=2024-03-11") == inside
    assert query("created_from=2024-03-10") == {*inside, "after"}
    assert query("created_to=2024-03-11") == {*inside, "before", "offset-before"}
    assert query("created_from=2024-03-09&created_to=2024-03-09") == {"before", "offset-before"}
    assert query("created_from=2024-03-12&created_to=2024-03-12") == {"after"}
    assert query("created_from=2024-03-13") == set()

    # Timestamps come back in UTC whatever offset they were written with.
    items = client.get("/tasks?sort=created_at", headers=admin_headers).json["items"]
    by_name = {item["task_name"]: item["created_at"] for item in items}
    assert assert_utc_timestamp(by_name["offset-before"]) == datetime(2024, 3, 9, 20, tzinfo=UTC)
    assert by_name["offset-before"] in ("2024-03-09T20:00:00Z", "2024-03-09T20:00:00+00:00")
    assert [item["task_name"] for item in items] == [
        "offset-before",
        "before",
        "first-instant",
        "offset-inside",
        "last-instant",
        "after",
    ]


# --- sorting ---------------------------------------------------------------------------------


def test_sort_by_priority_uses_severity_not_the_alphabet(
    client: FlaskClient, admin_headers: Headers
) -> None:
    for priority in ("MEDIUM", "CRITICAL", "LOW", "HIGH"):
        create(client, admin_headers, task_name=priority.lower(), priority=priority)

    def order(sort: str) -> list[str]:
        response = client.get(f"/tasks?sort={sort}", headers=admin_headers)
        return [item["priority"] for item in response.json["items"]]

    assert order("priority") == ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
    assert order("-priority") == ["CRITICAL", "HIGH", "MEDIUM", "LOW"]


def test_sort_by_name_id_and_several_fields(client: FlaskClient, admin_headers: Headers) -> None:
    specs = [
        ("charlie", "active", "LOW"),
        ("alpha", "inactive", "HIGH"),
        ("delta", "active", "CRITICAL"),
        ("bravo", "inactive", "LOW"),
        ("echo", "active", "LOW"),
    ]
    created = [
        create(client, admin_headers, task_name=n, status=s, priority=p)["id"] for n, s, p in specs
    ]

    def order(sort: str) -> list[str]:
        return names(client.get("/tasks", query_string={"sort": sort}, headers=admin_headers))

    assert order("task_name") == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert order("-task_name") == ["echo", "delta", "charlie", "bravo", "alpha"]
    assert ids(client.get("/tasks?sort=id", headers=admin_headers)) == sorted(created)
    assert ids(client.get("/tasks?sort=-id", headers=admin_headers)) == sorted(created)[::-1]
    # status asc, then priority desc, then (implicitly) newest id first
    assert order("status,-priority") == ["delta", "echo", "charlie", "alpha", "bravo"]
    assert order("status, -priority, task_name") == ["delta", "charlie", "echo", "alpha", "bravo"]
    assert order("-status,priority,-task_name") == ["bravo", "alpha", "echo", "charlie", "delta"]


def test_default_sort_is_newest_first_and_created_at_sorts_both_ways(
    app: APIFlask, client: FlaskClient, admin_headers: Headers
) -> None:
    days = {"old": 1, "new": 3, "mid": 2}
    for name, day in days.items():
        set_created_at(
            app,
            create(client, admin_headers, task_name=name)["id"],
            datetime(2024, 1, day, tzinfo=UTC),
        )
    assert names(client.get("/tasks", headers=admin_headers)) == ["new", "mid", "old"]
    assert names(client.get("/tasks?sort=created_at", headers=admin_headers)) == [
        "old",
        "mid",
        "new",
    ]
    assert names(client.get("/tasks?sort=-created_at", headers=admin_headers)) == [
        "new",
        "mid",
        "old",
    ]


def test_sort_by_updated_at(client: FlaskClient, admin_headers: Headers) -> None:
    first = create(client, admin_headers, task_name="first")
    create(client, admin_headers, task_name="second")
    updated = client.put(f"/task/{first['id']}", json={"priority": "LOW"}, headers=admin_headers)
    assert updated.status_code == 200
    assert names(client.get("/tasks?sort=updated_at", headers=admin_headers)) == ["second", "first"]
    assert names(client.get("/tasks?sort=-updated_at", headers=admin_headers)) == [
        "first",
        "second",
    ]


def test_sort_by_due_date_puts_tasks_without_one_last_on_every_backend(
    client: FlaskClient, admin_headers: Headers
) -> None:
    create(client, admin_headers, task_name="late", due_date="2024-02-01")
    create(client, admin_headers, task_name="none")
    create(client, admin_headers, task_name="early", due_date="2024-01-01")
    assert names(client.get("/tasks?sort=due_date", headers=admin_headers)) == [
        "early",
        "late",
        "none",
    ]
    assert names(client.get("/tasks?sort=-due_date", headers=admin_headers)) == [
        "late",
        "early",
        "none",
    ]


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "priority", "status,-priority"])
def test_pages_never_overlap_when_sort_keys_tie(
    app: APIFlask, client: FlaskClient, admin_headers: Headers, sort: str
) -> None:
    same_instant = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    created = []
    for n in range(7):
        task = create(client, admin_headers, task_name=f"t{n}", priority="HIGH")
        set_created_at(app, task["id"], same_instant)
        created.append(task["id"])
    everything = ids(client.get("/tasks", query_string={"sort": sort}, headers=admin_headers))
    assert everything == sorted(created, reverse=True)  # ties broken by id, newest first
    paged: list[int] = []
    for page in (1, 2, 3):
        response = client.get(
            "/tasks",
            query_string={"sort": sort, "per_page": 3, "page": page},
            headers=admin_headers,
        )
        paged.extend(ids(response))
    assert paged == everything
    assert len(set(paged)) == 7


@pytest.mark.parametrize(
    "sort",
    [
        "",
        "nope",
        "password_hash",
        "deleted_at",
        "ID",
        "-",
        "--id",
        "id,",
        ",id",
        "id desc",
        "task_name asc",
        "id;DROP TABLE task_manager",
        "id); DELETE FROM task_manager; --",
        "(select 1)",
        "1",
        "created_at,nope",
        "priority'",
    ],
)
def test_sort_rejects_unknown_fields_and_sql(
    app: APIFlask, client: FlaskClient, admin_headers: Headers, sort: str
) -> None:
    create(client, admin_headers)
    response = client.get("/tasks", query_string={"sort": sort}, headers=admin_headers)
    assert_validation_error(response, "query", "sort")
    assert task_count(app) == 1


# --- pagination ------------------------------------------------------------------------------


def test_pagination_body_and_link_header(client: FlaskClient, admin_headers: Headers) -> None:
    created = [create(client, admin_headers, task_name=f"t{n}")["id"] for n in range(5)]
    create(client, admin_headers, task_name="inactive one", status="inactive")
    base = {"status": "active", "sort": "id", "per_page": "2"}

    def get(page: int) -> TestResponse:
        return client.get("/tasks", query_string={**base, "page": page}, headers=admin_headers)

    first = get(1)
    assert ids(first) == created[:2]
    assert {k: first.json[k] for k in ("page", "per_page", "total", "pages")} == {
        "page": 1,
        "per_page": 2,
        "total": 5,
        "pages": 3,
    }
    rels = links(first)
    assert set(rels) == {"first", "next", "last"}
    for params in rels.values():  # every link keeps the other query parameters
        assert {k: v for k, v in params.items() if k != "page"} == base
    assert (rels["first"]["page"], rels["next"]["page"], rels["last"]["page"]) == ("1", "2", "3")

    second = get(2)
    assert ids(second) == created[2:4]
    rels = links(second)
    assert {rel: p["page"] for rel, p in rels.items()} == {
        "first": "1",
        "prev": "1",
        "next": "3",
        "last": "3",
    }

    third = get(3)
    assert ids(third) == created[4:]
    assert {rel: p["page"] for rel, p in links(third).items()} == {
        "first": "1",
        "prev": "2",
        "last": "3",
    }

    past = get(4)
    assert past.status_code == 200
    assert past.json["items"] == []
    assert (past.json["page"], past.json["total"], past.json["pages"]) == (4, 5, 3)
    rels = links(past)
    assert {rel: p["page"] for rel, p in rels.items()} == {"first": "1", "prev": "3", "last": "3"}
    assert ids(client.get("/tasks?page=2147483647&per_page=100", headers=admin_headers)) == []


def test_pagination_defaults_limits_and_empty_list(
    client: FlaskClient, admin_headers: Headers
) -> None:
    empty = client.get("/tasks", headers=admin_headers)
    assert empty.status_code == 200
    assert empty.json == {
        "items": [],
        "page": 1,
        "per_page": 20,
        "total": 0,
        "total_is_estimate": False,
        "pages": 0,
    }
    assert {rel: p["page"] for rel, p in links(empty).items()} == {"first": "1", "last": "1"}

    for n in range(21):
        create(client, admin_headers, task_name=f"t{n}")
    default = client.get("/tasks", headers=admin_headers)
    assert len(default.json["items"]) == 20
    assert (default.json["total"], default.json["pages"]) == (21, 2)
    assert len(ids(client.get("/tasks?per_page=100", headers=admin_headers))) == 21
    assert len(ids(client.get("/tasks?per_page=1&page=21", headers=admin_headers))) == 1


def test_history_pagination_is_validated(client: FlaskClient, admin_headers: Headers) -> None:
    task = create(client, admin_headers)
    for query, field in (("page=0", "page"), ("per_page=101", "per_page"), ("x=1", "x")):
        response = client.get(f"/task/{task['id']}/history?{query}", headers=admin_headers)
        assert_validation_error(response, "query", field)
    huge = client.get(
        f"/task/{task['id']}/history?page=99999999999999999999", headers=admin_headers
    )
    assert_validation_error(huge, "query", "page")


# --- response format -------------------------------------------------------------------------


def test_every_answer_is_json_with_utc_iso_timestamps(
    app: APIFlask, client: FlaskClient, admin_headers: Headers
) -> None:
    task = create(client, admin_headers, due_date="2030-02-03")
    assert client.delete(f"/task/{task['id']}", headers=admin_headers).status_code == 204
    responses = [
        client.get(f"/task/{task['id']}", headers=admin_headers),
        client.get("/tasks?deleted=include", headers=admin_headers),
        client.get(f"/task/{task['id']}/history", headers=admin_headers),
        client.post(f"/task/{task['id']}/restore", headers=admin_headers),
        client.get("/tasks?page=0", headers=admin_headers),
        client.get("/task/555555", headers=admin_headers),
        client.get("/tasks"),
    ]
    for response in responses:
        assert response.mimetype == "application/json", response.request.path
        assert isinstance(response.json, dict)

    got = responses[0].json
    assert got["due_date"] == "2030-02-03"  # dates stay plain dates
    for key in ("created_at", "updated_at", "deleted_at"):
        assert_utc_timestamp(got[key])
    listed = responses[1].json["items"][0]
    assert listed == {**got, "log": None}  # list items carry the daily-log slot, empty here
    for entry in responses[2].json["items"]:
        assert_utc_timestamp(entry["created_at"])
    restored = responses[3].json
    assert restored["deleted_at"] is None
    assert assert_utc_timestamp(restored["updated_at"]) >= assert_utc_timestamp(got["updated_at"])

    stored = row(app, task["id"])
    assert stored is not None
    for key in ("created_at", "updated_at"):
        assert stored[key].tzinfo is not None and stored[key].utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused_by_the_database_layer(
    app: APIFlask, client: FlaskClient, admin_headers: Headers
) -> None:
    task = create(client, admin_headers)
    with app.app_context():
        stored = db.session.get(Task, task["id"])
        assert stored is not None
        stored.created_at = datetime(2024, 1, 1, 12, 0)  # naive on purpose
        with pytest.raises(StatementError, match="naive datetimes are not accepted"):
            db.session.commit()
        db.session.rollback()
    stored_row = row(app, task["id"])
    assert stored_row is not None
    assert assert_utc_timestamp(task["created_at"]) == stored_row["created_at"]
