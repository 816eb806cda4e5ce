"""API3 Broken Object Property Level Authorization: mass assignment and excessive exposure.

Server-owned properties can never be set through any body (422, nothing changes), and no
response of any endpoint carries a password hash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import User
from tests.conftest import Account
from tests.security.helpers import snapshot

Login = Callable[[Account], dict[str, str]]

SERVER_OWNED: dict[str, Any] = {
    "role": "admin",
    "id": 4242,
    "created_by": 1,
    "created_by_id": 1,
    "deleted_at": "2020-01-01T00:00:00Z",
    "password_hash": "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA",
    "version": 99,
    "import_key": "forged-import-key",
}
ENDPOINTS = ["register", "patch_me", "post_task", "put_task", "patch_admin_user"]
# `role` is what PATCH /admin/users is for (tested in tests/api/test_admin.py).
ALLOWED = {("patch_admin_user", "role")}
CASES = [(e, f) for e in ENDPOINTS for f in SERVER_OWNED if (e, f) not in ALLOWED]


def _send(
    client: FlaskClient, endpoint: str, field: str, headers: dict[str, dict[str, str]], ids: Any
) -> Any:
    extra = {field: SERVER_OWNED[field]}
    if endpoint == "register":
        body = {"username": "mallory", "email": "m@example.com", "password": "long enough pw"}
        return client.post("/register", json={**body, **extra})
    if endpoint == "patch_me":
        return client.patch(
            "/me", json={"email": "a2@example.com", **extra}, headers=headers["alice"]
        )
    if endpoint == "post_task":
        return client.post("/task", json={"task_name": "t", **extra}, headers=headers["alice"])
    if endpoint == "put_task":
        return client.put(
            f"/task/{ids['task']}", json={"task_name": "t2", **extra}, headers=headers["alice"]
        )
    return client.patch(
        f"/admin/users/{ids['alice']}", json={"is_active": True, **extra}, headers=headers["admin"]
    )


@pytest.mark.parametrize(("endpoint", "field"), CASES)
def test_server_owned_properties_cannot_be_set_through_any_body(
    app: APIFlask,
    client: FlaskClient,
    login: Login,
    admin: Account,
    alice: Account,
    endpoint: str,
    field: str,
) -> None:
    headers = {"admin": login(admin), "alice": login(alice)}
    task = client.post("/task", json={"task_name": "own"}, headers=headers["alice"])
    before = snapshot(app)

    response = _send(client, endpoint, field, headers, {"task": task.json["id"], "alice": alice.id})

    assert response.status_code == 422, response.json
    assert field in str(response.json["errors"])
    assert snapshot(app) == before


def test_no_response_ever_carries_a_password_hash(
    app: APIFlask,
    client: FlaskClient,
    login: Login,
    admin: Account,
    moderator: Account,
    alice: Account,
) -> None:
    with app.app_context():
        hashes = list(db.session.scalars(select(User.password_hash)))
    admin_h, alice_h = login(admin), login(alice)
    pair = client.post("/login", json={"username": "alice", "password": alice.password}).json
    task = client.post("/task", json={"task_name": "t"}, headers=alice_h)
    task_id = task.json["id"]
    responses = [
        client.post(
            "/register",
            json={"username": "newbie", "email": "n@example.com", "password": "long enough pw"},
        ),
        client.post(
            "/register", json={"username": "alice", "email": "x@example.com", "password": "x"}
        ),
        client.post("/login", json={"username": "alice", "password": "wrong password"}),
        client.post("/token/refresh", json={"refresh_token": pair["refresh_token"]}),
        client.get("/me", headers=alice_h),
        client.patch(
            "/me",
            json={"password": "a brand new pw", "current_password": alice.password},
            headers=alice_h,
        ),
        client.patch("/me", json={"email": "admin@example.com"}, headers=login(moderator)),
        task,
        client.get(f"/task/{task_id}", headers=alice_h),
        client.put(f"/task/{task_id}", json={"task_name": "t3"}, headers=alice_h),
        client.get(f"/task/{task_id}/history", headers=alice_h),
        client.get("/tasks", headers=alice_h),
        client.get("/admin/users?per_page=100", headers=admin_h),
        client.patch(
            f"/admin/users/{alice.id}", json={"password": "reset pw 123"}, headers=admin_h
        ),
        client.get("/admin/dashboard", headers=admin_h),
        client.get("/openapi.json"),
    ]
    for response in responses:
        text = response.get_data(as_text=True)
        assert "$argon2" not in text, response.request.path
        assert "password_hash" not in text, response.request.path
        for hashed in hashes:
            if hashed:
                assert hashed not in text, response.request.path
