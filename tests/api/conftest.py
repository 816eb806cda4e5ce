"""Helpers shared by the API tests."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.conftest import Account


def logged_in_and_remembered(client: FlaskClient, account: Account) -> dict[str, str]:
    """Log `account` in on `client` and make one read, after which the process remembers the
    session (app.auth.session_memory); its Authorization header."""
    response = client.post(
        "/login", json={"username": account.username, "password": account.password}
    )
    headers = {"Authorization": f"Bearer {response.json['access_token']}"}
    assert client.get("/tasks", headers=headers).status_code == 200
    return headers
