"""Who may do what to which task: the role x action matrix on live, soft-deleted and missing tasks.

Actors: the `user` who created the task, the `user` it is assigned to, an unrelated `user`, a
moderator and an admin. A `user` never learns that someone else's task exists (404, not 403), and
every refused request must leave the database exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import func, inspect, select
from werkzeug.test import TestResponse

from app.extensions import db
from app.models import Role, Task, TaskAuditEntry
from tests.conftest import Account

Login = Callable[[Account], dict[str, str]]

ACTORS = ("creator", "assignee", "other", "moderator", "admin")
VERBS = ("get", "put", "delete", "restore", "history", "purge")
MISSING_TASK_ID = 987_654
TASK_NAME = "Quarterly report"
NEW_NAME = "Renamed quarterly report"

# Expected status per verb and actor, on a live task, a soft-deleted task and a missing id.
LIVE: dict[str, dict[str, int]] = {
    "get": {"creator": 200, "assignee": 200, "other": 404, "moderator": 200, "admin": 200},
    "put": {"creator": 200, "assignee": 200, "other": 404, "moderator": 200, "admin": 200},
    "delete": {"creator": 403, "assignee": 403, "other": 404, "moderator": 204, "admin": 204},
    "restore": {"creator": 403, "assignee": 403, "other": 403, "moderator": 403, "admin": 409},
    "history": {"creator": 200, "assignee": 200, "other": 404, "moderator": 200, "admin": 200},
    "purge": {"creator": 403, "assignee": 403, "other": 403, "moderator": 403, "admin": 204},
}
DELETED: dict[str, dict[str, int]] = {
    "get": {"creator": 404, "assignee": 404, "other": 404, "moderator": 404, "admin": 200},
    # An admin sees a deleted task but must restore it before changing it.
    "put": {"creator": 404, "assignee": 404, "other": 404, "moderator": 404, "admin": 409},
    "delete": {"creator": 404, "assignee": 404, "other": 404, "moderator": 404, "admin": 409},
    "restore": {"creator": 403, "assignee": 403, "other": 403, "moderator": 403, "admin": 200},
    "history": {"creator": 404, "assignee": 404, "other": 404, "moderator": 404, "admin": 200},
    "purge": {"creator": 403, "assignee": 403, "other": 403, "moderator": 403, "admin": 204},
}
MISSING: dict[str, dict[str, int]] = {
    "get": dict.fromkeys(ACTORS, 404),
    "put": dict.fromkeys(ACTORS, 404),
    "delete": dict.fromkeys(ACTORS, 404),
    # Role checks come first, so a non-admin cannot probe ids through restore or purge.
    "restore": {"creator": 403, "assignee": 403, "other": 403, "moderator": 403, "admin": 404},
    "history": dict.fromkeys(ACTORS, 404),
    "purge": {"creator": 403, "assignee": 403, "other": 403, "moderator": 403, "admin": 404},
}


def _cases(table: dict[str, dict[str, int]]) -> list[Any]:
    return [
        pytest.param(verb, actor, status, id=f"{verb}-{actor}")
        for verb, by_actor in table.items()
        for actor, status in by_actor.items()
    ]


@dataclass
class World:
    """alice created the task, the admin assigned it to bob; carol is an unrelated `user`."""

    client: FlaskClient
    login: Login
    accounts: dict[str, Account]
    task_id: int
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def headers(self, actor: str) -> dict[str, str]:
        if actor not in self._headers:
            self._headers[actor] = self.login(self.accounts[actor])
        return self._headers[actor]

    def call(self, verb: str, actor: str, task_id: int | None = None) -> TestResponse:
        task_id = self.task_id if task_id is None else task_id
        headers = self.headers(actor)
        if verb == "get":
            return self.client.get(f"/task/{task_id}", headers=headers)
        if verb == "put":
            return self.client.put(
                f"/task/{task_id}", json={"task_name": NEW_NAME}, headers=headers
            )
        if verb == "delete":
            return self.client.delete(f"/task/{task_id}", headers=headers)
        if verb == "restore":
            return self.client.post(f"/task/{task_id}/restore", headers=headers)
        if verb == "history":
            return self.client.get(f"/task/{task_id}/history", headers=headers)
        if verb == "purge":
            return self.client.delete(f"/admin/tasks/{task_id}", headers=headers)
        raise AssertionError(f"unknown verb {verb}")


@pytest.fixture
def world(
    client: FlaskClient,
    login: Login,
    make_user: Callable[..., Account],
    admin: Account,
    moderator: Account,
    alice: Account,
    bob: Account,
) -> World:
    carol = make_user("carol", Role.USER)
    accounts = {
        "creator": alice,
        "assignee": bob,
        "other": carol,
        "moderator": moderator,
        "admin": admin,
    }
    created = client.post(
        "/task", json={"task_name": TASK_NAME, "description": "draft"}, headers=login(alice)
    )
    assert created.status_code == 201, created.json
    world = World(client=client, login=login, accounts=accounts, task_id=created.json["id"])
    assigned = client.put(
        f"/task/{world.task_id}", json={"assigned_user_id": bob.id}, headers=world.headers("admin")
    )
    assert assigned.status_code == 200, assigned.json
    return world


def _soft_delete(world: World) -> None:
    response = world.client.delete(f"/task/{world.task_id}", headers=world.headers("admin"))
    assert response.status_code == 204


def snapshot(app: APIFlask) -> dict[str, Any]:
    """Every task row and every audit row, as plain values."""
    with app.app_context():
        tasks = {
            task.id: {attr.key: getattr(task, attr.key) for attr in inspect(Task).column_attrs}
            for task in db.session.scalars(select(Task))
        }
        audit = [
            (entry.id, entry.task_id, entry.actor_id, entry.action, entry.changes)
            for entry in db.session.scalars(select(TaskAuditEntry).order_by(TaskAuditEntry.id))
        ]
    return {"tasks": tasks, "audit": audit}


def audit_entries(app: APIFlask, task_id: int) -> list[TaskAuditEntry]:
    with app.app_context():
        entries = list(
            db.session.scalars(
                select(TaskAuditEntry)
                .where(TaskAuditEntry.task_id == task_id)
                .order_by(TaskAuditEntry.id)
            )
        )
        db.session.expunge_all()
    return entries


def assert_error(response: TestResponse, status: int) -> None:
    assert response.status_code == status, response.json
    assert response.is_json
    assert response.json["code"] == status
    assert isinstance(response.json["message"], str) and response.json["message"]
    assert isinstance(response.json["description"], str) and response.json["description"]


def assert_effect(
    app: APIFlask,
    world: World,
    verb: str,
    actor: str,
    before: dict[str, Any],
    response: TestResponse,
) -> None:
    """What a successful call must have changed (and nothing else)."""
    after = snapshot(app)
    task_id = world.task_id
    actor_id = world.accounts[actor].id
    if verb in ("get", "history"):
        assert after == before  # reads change nothing
        if verb == "get":
            assert response.json["id"] == task_id
            assert response.json["task_name"] == TASK_NAME
        else:
            expected = [e[0] for e in before["audit"] if e[1] == task_id][::-1]  # newest first
            assert [item["id"] for item in response.json["items"]] == expected
        return
    if verb == "purge":
        assert response.data == b""
        assert task_id not in after["tasks"]
        assert [e for e in after["audit"] if e[1] == task_id] == []
        with app.app_context():  # the cascade reached the database rows, not just the ORM
            count = db.session.scalar(
                select(func.count())
                .select_from(TaskAuditEntry)
                .where(TaskAuditEntry.task_id == task_id)
            )
        assert count == 0
        return
    old_row, new_row = before["tasks"][task_id], after["tasks"][task_id]
    new_entries = after["audit"][len(before["audit"]) :]
    assert after["audit"][: len(before["audit"])] == before["audit"]
    assert len(new_entries) == 1
    _, entry_task_id, entry_actor_id, action, changes = new_entries[0]
    assert (entry_task_id, entry_actor_id) == (task_id, actor_id)
    changed = {k for k in old_row if old_row[k] != new_row[k]}
    if verb == "put":
        assert response.json["task_name"] == NEW_NAME
        assert changed == {"task_name", "updated_at", "version"}
        assert action == "updated"
        assert changes == {"task_name": {"old": TASK_NAME, "new": NEW_NAME}}
    elif verb == "delete":
        assert response.data == b""
        assert changed == {"deleted_at", "updated_at", "version"}
        assert new_row["deleted_at"] is not None
        assert action == "deleted"
        assert changes["deleted_at"]["old"] is None
    elif verb == "restore":
        assert response.json["deleted_at"] is None
        assert changed == {"deleted_at", "updated_at", "version"}
        assert new_row["deleted_at"] is None
        assert action == "restored"
        assert changes["deleted_at"]["new"] is None
    else:
        raise AssertionError(f"unexpected verb {verb}")


def _run_case(app: APIFlask, world: World, verb: str, actor: str, status: int) -> None:
    before = snapshot(app)
    response = world.call(verb, actor)
    if status >= 400:
        assert_error(response, status)
        assert snapshot(app) == before, f"{verb} by {actor} was refused but changed the database"
    else:
        assert response.status_code == status, response.json
        assert_effect(app, world, verb, actor, before, response)


@pytest.mark.parametrize(("verb", "actor", "status"), _cases(LIVE))
def test_matrix_on_live_task(
    app: APIFlask, world: World, verb: str, actor: str, status: int
) -> None:
    _run_case(app, world, verb, actor, status)


@pytest.mark.parametrize(("verb", "actor", "status"), _cases(DELETED))
def test_matrix_on_soft_deleted_task(
    app: APIFlask, world: World, verb: str, actor: str, status: int
) -> None:
    _soft_delete(world)
    _run_case(app, world, verb, actor, status)


@pytest.mark.parametrize(("verb", "actor", "status"), _cases(MISSING))
def test_matrix_on_missing_task(
    app: APIFlask, world: World, verb: str, actor: str, status: int
) -> None:
    before = snapshot(app)
    assert_error(world.call(verb, actor, task_id=MISSING_TASK_ID), status)
    assert snapshot(app) == before


@pytest.mark.parametrize("task_id", [2**31, 99_999_999_999_999_999_999])
@pytest.mark.parametrize("verb", VERBS)
def test_ids_beyond_the_database_range_are_not_found(
    app: APIFlask, world: World, verb: str, task_id: int
) -> None:
    """An id no row can have is simply not found (it used to overflow the driver: 500)."""
    before = snapshot(app)
    assert_error(world.call(verb, "admin", task_id=task_id), 404)
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("actor", "listed"),
    [("creator", True), ("assignee", True), ("other", False), ("moderator", True), ("admin", True)],
)
def test_list_visibility_of_live_task(world: World, actor: str, listed: bool) -> None:
    response = world.client.get("/tasks", headers=world.headers(actor))
    assert response.status_code == 200
    ids = [item["id"] for item in response.json["items"]]
    assert ids == ([world.task_id] if listed else [])
    assert response.json["total"] == len(ids)


@pytest.mark.parametrize("actor", ACTORS)
def test_soft_deleted_task_is_not_listed_by_default(world: World, actor: str) -> None:
    _soft_delete(world)
    response = world.client.get("/tasks", headers=world.headers(actor))
    assert response.status_code == 200
    assert response.json["items"] == []
    assert response.json["total"] == 0


@pytest.mark.parametrize("deleted", ["include", "only"])
@pytest.mark.parametrize(
    ("actor", "status"),
    [("creator", 403), ("assignee", 403), ("other", 403), ("moderator", 403), ("admin", 200)],
)
def test_listing_deleted_tasks_is_admin_only(
    world: World, actor: str, status: int, deleted: str
) -> None:
    _soft_delete(world)
    response = world.client.get(f"/tasks?deleted={deleted}", headers=world.headers(actor))
    if status != 200:
        assert_error(response, status)
        return
    assert response.status_code == 200
    assert [item["id"] for item in response.json["items"]] == [world.task_id]
    assert response.json["items"][0]["deleted_at"] is not None


@pytest.mark.parametrize("actor", ACTORS)
def test_deleted_exclude_is_allowed_for_everyone(world: World, actor: str) -> None:
    response = world.client.get("/tasks?deleted=exclude", headers=world.headers(actor))
    assert response.status_code == 200


def test_user_list_never_shows_other_users_tasks(
    app: APIFlask, world: World, client: FlaskClient
) -> None:
    """Filters and search cannot widen a `user`'s scope."""
    others = client.post(
        "/task",
        json={"task_name": "Quarterly secret", "assigned_user_id": world.accounts["other"].id},
        headers=world.headers("moderator"),
    )
    assert others.status_code == 201
    bob_id = world.accounts["assignee"].id
    carol_id = world.accounts["other"].id
    for query in ("q=quarterly", f"assigned_user={carol_id}", f"assigned_user={bob_id}", "sort=id"):
        response = client.get(f"/tasks?{query}", headers=world.headers("creator"))
        assert response.status_code == 200
        ids = {item["id"] for item in response.json["items"]}
        assert others.json["id"] not in ids, query
    carol = client.get("/tasks?q=quarterly", headers=world.headers("other"))
    assert [item["id"] for item in carol.json["items"]] == [others.json["id"]]


# --- create and (re)assign -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "target", "status"),
    [
        ("creator", None, 201),
        ("creator", "self", 201),
        ("creator", "other", 403),
        ("creator", "missing", 403),  # no user-id probing: a `user` gets 403 either way
        ("moderator", None, 201),
        ("moderator", "self", 201),
        ("moderator", "other", 201),
        ("moderator", "missing", 422),
        ("admin", None, 201),
        ("admin", "self", 201),
        ("admin", "other", 201),
        ("admin", "missing", 422),
    ],
)
def test_create_assignment_rules(
    app: APIFlask, world: World, actor: str, target: str | None, status: int
) -> None:
    target_id = {
        None: None,
        "self": world.accounts[actor].id,
        "other": world.accounts["other"].id,
        "missing": MISSING_TASK_ID,
    }[target]
    before = snapshot(app)
    response = world.client.post(
        "/task",
        json={"task_name": "New one", "assigned_user_id": target_id},
        headers=world.headers(actor),
    )
    if status != 201:
        assert_error(response, status)
        if status == 422:
            assert list(response.json["errors"]["json"]) == ["assigned_user_id"]
        assert snapshot(app) == before
        return
    assert response.status_code == 201
    after = snapshot(app)
    row = after["tasks"][response.json["id"]]
    assert row["created_by_id"] == world.accounts[actor].id
    assert row["assigned_user_id"] == target_id
    assert len(after["tasks"]) == len(before["tasks"]) + 1
    assert len(after["audit"]) == len(before["audit"]) + 1


@pytest.mark.parametrize(
    ("actor", "target", "status"),
    [
        ("creator", "self", 200),
        ("creator", "other", 403),
        ("creator", None, 200),
        ("creator", "missing", 403),
        ("assignee", "self", 200),  # already bob's: no change
        ("assignee", "other", 403),
        ("assignee", None, 200),
        ("other", "self", 404),
        ("other", None, 404),
        ("moderator", "other", 200),
        ("moderator", None, 200),
        ("moderator", "missing", 422),
        ("admin", "other", 200),
        ("admin", "self", 200),
        ("admin", "missing", 422),
    ],
)
def test_reassignment_rules(
    app: APIFlask, world: World, actor: str, target: str | None, status: int
) -> None:
    target_id = {
        None: None,
        "self": world.accounts[actor].id,
        "other": world.accounts["other"].id,
        "missing": MISSING_TASK_ID,
    }[target]
    before = snapshot(app)
    response = world.client.put(
        f"/task/{world.task_id}",
        json={"assigned_user_id": target_id},
        headers=world.headers(actor),
    )
    if status != 200:
        assert_error(response, status)
        assert snapshot(app) == before
        return
    assert response.status_code == 200
    assert response.json["assigned_user_id"] == target_id
    after = snapshot(app)
    assert after["tasks"][world.task_id]["assigned_user_id"] == target_id
    old_assignee = world.accounts["assignee"].id
    if target_id == old_assignee:
        assert after == before  # a no-op update is not audited
    else:
        assert after["audit"][-1][2:] == (
            world.accounts[actor].id,
            "updated",
            {"assigned_user_id": {"old": old_assignee, "new": target_id}},
        )


def test_assignee_who_unassigns_themselves_loses_sight_of_the_task(world: World) -> None:
    response = world.client.put(
        f"/task/{world.task_id}", json={"assigned_user_id": None}, headers=world.headers("assignee")
    )
    assert response.status_code == 200
    assert world.call("get", "assignee").status_code == 404
    assert world.call("get", "creator").status_code == 200


def test_admin_reassignment_grants_the_new_assignee_access(world: World) -> None:
    assert world.call("get", "other").status_code == 404
    response = world.client.put(
        f"/task/{world.task_id}",
        json={"assigned_user_id": world.accounts["other"].id},
        headers=world.headers("admin"),
    )
    assert response.status_code == 200
    assert world.call("get", "other").status_code == 200
    assert world.call("get", "assignee").status_code == 404  # bob is no longer on it


def test_restored_task_is_visible_again_to_its_users(world: World) -> None:
    _soft_delete(world)
    assert world.call("get", "creator").status_code == 404
    restored = world.call("restore", "admin")
    assert restored.status_code == 200
    for actor in ("creator", "assignee", "moderator"):
        assert world.call("get", actor).status_code == 200, actor
    assert world.call("get", "other").status_code == 404


@pytest.mark.parametrize("verb", [*VERBS, "list", "create"])
def test_anonymous_requests_are_refused(app: APIFlask, world: World, verb: str) -> None:
    before = snapshot(app)
    method, path = {
        "get": ("GET", f"/task/{world.task_id}"),
        "put": ("PUT", f"/task/{world.task_id}"),
        "delete": ("DELETE", f"/task/{world.task_id}"),
        "restore": ("POST", f"/task/{world.task_id}/restore"),
        "history": ("GET", f"/task/{world.task_id}/history"),
        "purge": ("DELETE", f"/admin/tasks/{world.task_id}"),
        "list": ("GET", "/tasks"),
        "create": ("POST", "/task"),
    }[verb]
    body = {"task_name": NEW_NAME} if method in ("PUT", "POST") else None
    response = world.client.open(path, method=method, json=body)
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot(app) == before
