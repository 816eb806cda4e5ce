"""API2 Broken Authentication: the cases tests/api/test_jwt_attacks.py and test_auth.py leave out.

Tokens are read from the Authorization header only (never a query string or cookie), odd headers
are a clean 401, a login sets no cookie, and a deactivation or demotion binds every endpoint at
once, writes included.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import update

from app.extensions import db
from app.models import Role, User
from tests.conftest import Account
from tests.security.helpers import snapshot

Login = Callable[[Account], dict[str, str]]


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def test_a_token_outside_the_authorization_header_is_ignored(
    client: FlaskClient, alice: Account, login: Login
) -> None:
    token = _token(login(alice))
    assert client.get(f"/me?access_token={token}").status_code == 401
    assert client.get(f"/me?token={token}").status_code == 401
    client.set_cookie("access_token", token)
    client.set_cookie("session", token)
    assert client.get("/me").status_code == 401


@pytest.mark.parametrize(
    "value",
    [
        "Bearer " + "a" * 16_000,
        "Bearer \u00e9\u00e9.\u00e9\u00e9.\u00e9\u00e9",
        "Bearer a.b.c d.e.f",
        "Bearer\t",
        "Basic YWxpY2U6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5",  # alice's real password, Basic scheme
        "Bearer null",
        "Bearer undefined",
    ],
    ids=["huge", "non-ascii", "two-tokens", "tab", "basic-with-real-password", "null", "undef"],
)
def test_odd_authorization_headers_are_a_clean_401(
    client: FlaskClient, alice: Account, value: str
) -> None:
    response = client.get("/me", headers={"Authorization": value})
    assert response.status_code == 401
    assert response.json["code"] == 401


def test_login_and_refresh_set_no_cookie(client: FlaskClient, alice: Account) -> None:
    response = client.post("/login", json={"username": "alice", "password": alice.password})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    refreshed = client.post(
        "/token/refresh", json={"refresh_token": response.json["refresh_token"]}
    )
    assert refreshed.status_code == 200
    assert "Set-Cookie" not in refreshed.headers


def test_a_deactivated_users_token_can_write_nothing(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)
    created = client.post("/task", json={"task_name": "mine"}, headers=headers)
    task_id = created.json["id"]
    with app.app_context():
        db.session.execute(update(User).where(User.id == alice.id).values(is_active=False))
        db.session.commit()
    before = snapshot(app)

    attempts = [
        client.post("/task", json={"task_name": "after"}, headers=headers),
        client.put(f"/task/{task_id}", json={"task_name": "after"}, headers=headers),
        client.patch("/me", json={"email": "new@example.com"}, headers=headers),
        client.get(f"/task/{task_id}", headers=headers),
        client.get("/tasks", headers=headers),
    ]

    assert [r.status_code for r in attempts] == [401] * len(attempts)
    assert snapshot(app) == before


def test_a_demoted_admins_token_loses_admin_rights_at_once(
    app: APIFlask,
    client: FlaskClient,
    admin: Account,
    make_user: Callable[..., Account],
    login: Login,
) -> None:
    other = make_user("second_admin", Role.ADMIN)
    headers = login(other)
    assert client.get("/admin/dashboard", headers=headers).status_code == 200
    demoted = client.patch(f"/admin/users/{other.id}", json={"role": "user"}, headers=login(admin))
    assert demoted.status_code == 200

    assert client.get("/admin/dashboard", headers=headers).status_code == 403
    assert client.get("/admin/users", headers=headers).status_code == 403
    promote_back = client.patch(f"/admin/users/{other.id}", json={"role": "admin"}, headers=headers)
    assert promote_back.status_code == 403
