"""API1 Broken Object Level Authorization: a `user` reaching for another user's object by id.

For every endpoint that takes an id, bob (role `user`) touching alice's task, daily-log entry or
job is answered 404 (403 where the endpoint is role-gated first) and no row changes. Moderators
see only the jobs they started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import TaskLogEntry, User
from app.models.types import utcnow
from app.services import jobs as job_service
from app.services import loader
from tests.conftest import Account
from tests.security.helpers import snapshot

Login = Callable[[Account], dict[str, str]]


@dataclass
class World:
    task_id: int
    deleted_task_id: int
    log_id: int
    admin_job: str
    moderator_job: str
    headers: dict[str, dict[str, str]]


@pytest.fixture
def world(
    app: APIFlask,
    client: FlaskClient,
    login: Login,
    make_user: Callable[..., Account],
    admin: Account,
    moderator: Account,
    alice: Account,
    bob: Account,
) -> World:
    other_mod = make_user("mod_other", moderator.role)
    headers = {
        "admin": login(admin),
        "moderator": login(moderator),
        "other_mod": login(other_mod),
        "alice": login(alice),
        "bob": login(bob),
    }
    created = client.post("/task", json={"task_name": "alice private"}, headers=headers["alice"])
    assert created.status_code == 201
    task_id = created.json["id"]
    doomed = client.post("/task", json={"task_name": "alice gone"}, headers=headers["alice"])
    deleted_id = doomed.json["id"]
    with app.app_context():
        loader.run_inline(utcnow().date(), "test")
        log_id = db.session.scalars(
            select(TaskLogEntry.id).where(TaskLogEntry.task_id == task_id)
        ).one()
        admin_job = job_service.create_job("csv_import", {}, db.session.get(User, admin.id)).id
        mod_job = job_service.create_job("csv_import", {}, db.session.get(User, other_mod.id)).id
    assert client.delete(f"/task/{deleted_id}", headers=headers["admin"]).status_code == 204
    return World(task_id, deleted_id, log_id, admin_job, mod_job, headers)


# (method, url template, json body, expected status for bob)
BOB_ON_ALICES: list[tuple[str, str, dict[str, object] | None, int]] = [
    ("GET", "/task/{task}", None, 404),
    ("PUT", "/task/{task}", {"task_name": "pwned"}, 404),
    ("PUT", "/task/{task}", {"assigned_user_id": 0}, 422),  # body checked, still nothing changes
    ("PUT", "/task/{task}", {"description": "pwned", "status": "inactive"}, 404),
    ("DELETE", "/task/{task}", None, 404),
    ("GET", "/task/{task}/history", None, 404),
    ("GET", "/task/{task}/logs", None, 404),
    ("GET", "/logs/{log}", None, 404),
    ("POST", "/task/{deleted}/restore", None, 403),
    ("GET", "/task/{deleted}", None, 404),
    ("GET", "/task/{deleted}/history", None, 404),
    ("DELETE", "/admin/tasks/{task}", None, 403),
    ("GET", "/admin/jobs/{admin_job}", None, 403),
    ("PATCH", "/admin/users/{alice}", {"email": "pwned@example.com"}, 403),
]


@pytest.mark.parametrize(
    ("method", "template", "body", "expected"),
    BOB_ON_ALICES,
    ids=[f"{m} {t} {s}" for m, t, _b, s in BOB_ON_ALICES],
)
def test_a_user_cannot_touch_another_users_object(
    app: APIFlask,
    client: FlaskClient,
    world: World,
    alice: Account,
    method: str,
    template: str,
    body: dict[str, object] | None,
    expected: int,
) -> None:
    url = template.format(
        task=world.task_id,
        deleted=world.deleted_task_id,
        log=world.log_id,
        admin_job=world.admin_job,
        alice=alice.id,
    )
    before = snapshot(app)

    for extra in ({}, {"If-Match": f'"task-{world.task_id}-v1"'}, {"If-Match": "*"}):
        response = client.open(
            url, method=method, json=body, headers={**world.headers["bob"], **extra}
        )
        assert response.status_code == expected, (url, response.json)
        # The answer says nothing about the object (not even that it exists).
        text = response.get_data(as_text=True)
        assert "alice private" not in text and "alice gone" not in text

    assert snapshot(app) == before


def test_a_missing_and_a_foreign_task_are_indistinguishable(
    client: FlaskClient, world: World
) -> None:
    bob = world.headers["bob"]
    foreign = client.get(f"/task/{world.task_id}", headers=bob)
    missing = client.get("/task/999999", headers=bob)
    assert (foreign.status_code, foreign.json) == (missing.status_code, missing.json)


@pytest.mark.parametrize("job", ["admin_job", "moderator_job"])
def test_a_moderator_cannot_read_a_job_someone_else_started(
    app: APIFlask, client: FlaskClient, world: World, job: str
) -> None:
    job_id = getattr(world, job)
    before = snapshot(app)
    response = client.get(f"/admin/jobs/{job_id}", headers=world.headers["moderator"])
    assert response.status_code == 404, response.json
    assert job_id not in response.get_data(as_text=True)
    assert snapshot(app) == before
    # Control: the owner (or an admin) does see it.
    owner = "admin" if job == "admin_job" else "other_mod"
    assert client.get(f"/admin/jobs/{job_id}", headers=world.headers[owner]).status_code == 200


def test_bob_cannot_reach_alices_task_by_assigning_it_to_himself(
    app: APIFlask, client: FlaskClient, world: World, bob: Account
) -> None:
    before = snapshot(app)
    response = client.put(
        f"/task/{world.task_id}", json={"assigned_user_id": bob.id}, headers=world.headers["bob"]
    )
    assert response.status_code == 404
    assert snapshot(app) == before
