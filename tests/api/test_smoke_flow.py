"""The README's flow end to end: register, login, create, list, update, delete, dashboard."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient

from tests.conftest import Account


def test_register_login_task_lifecycle_and_dashboard(
    client: FlaskClient, admin: Account, login: Callable[[Account], dict[str, str]]
) -> None:
    registered = client.post(
        "/register",
        json={"username": "newbie", "email": "newbie@example.com", "password": "s3cret-pass"},
    )
    assert registered.status_code == 201
    assert registered.json["role"] == "user"

    tokens = client.post("/login", json={"username": "newbie", "password": "s3cret-pass"})
    assert tokens.status_code == 200
    headers = {"Authorization": f"Bearer {tokens.json['access_token']}"}

    created = client.post(
        "/task", json={"task_name": "Data Backup", "priority": "HIGH"}, headers=headers
    )
    assert created.status_code == 201
    task_id = created.json["id"]
    assert created.headers["Location"].endswith(f"/task/{task_id}")

    listed = client.get("/tasks", headers=headers)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json["items"]] == [task_id]

    updated = client.put(f"/task/{task_id}", json={"status": "inactive"}, headers=headers)
    assert updated.status_code == 200
    assert updated.json["status"] == "inactive"
    assert updated.json["priority"] == "HIGH"

    admin_headers = login(admin)
    assert client.delete(f"/task/{task_id}", headers=admin_headers).status_code == 204
    assert client.get(f"/task/{task_id}", headers=headers).status_code == 404

    dashboard = client.get("/admin/dashboard", headers=admin_headers)
    assert dashboard.status_code == 200
    assert dashboard.json["soft_deleted_tasks"] == 1
    assert dashboard.json["users_by_role"] == {"admin": 1, "moderator": 0, "user": 1}
    assert dashboard.json["tasks_created_per_day"][-1]["count"] == 1
