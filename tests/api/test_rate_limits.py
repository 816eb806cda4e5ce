"""Rate limits on POST /login and /register: per client address and per username, 429 with
Retry-After and the JSON error shape; an empty RATELIMIT_DEFAULT leaves the other endpoints
unlimited; counts shared by every app (worker) through Redis, and kept apart without it.
(Failed logins per username, PATCH /me and the per-caller limit: tests/security/
test_account_limits.py.)

Apps here are built with limits on (the `app` fixture has them off) on the `app` fixture's
database. Client addresses are fake WSGI `REMOTE_ADDR` values of the in-process test client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import TEST_PASSWORD, Account, MakeApp
from tests.reliability.helpers import running_redis

LIMIT = 3
HOUR = 3600
WRONG_PASSWORD = "not the password"


@pytest.fixture
def make_app(make_app: MakeApp) -> MakeApp:
    """The shared fixture's apps with limits on: `auth` per minute (None: the default
    setting)."""

    def _make(auth: int | None = LIMIT, **overrides: Any) -> APIFlask:
        values: dict[str, Any] = {"ratelimit_enabled": True}
        if auth is not None:
            values["ratelimit_auth"] = f"{auth}/minute"
        return make_app(**{**values, **overrides})

    return _make


def login_from(
    client: FlaskClient, address: str, username: str, password: str = WRONG_PASSWORD
) -> TestResponse:
    return client.post(
        "/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def register_from(client: FlaskClient, address: str, username: str) -> TestResponse:
    return client.post(
        "/register",
        json={"username": username, "email": f"{username}@example.com", "password": TEST_PASSWORD},
        environ_base={"REMOTE_ADDR": address},
    )


def assert_limited(response: TestResponse, window_seconds: int = 60) -> None:
    assert response.status_code == 429, response.json
    assert response.json is not None
    assert set(response.json) == {"code", "message", "description"}
    assert response.json["code"] == 429
    assert response.json["message"] == "Too Many Requests"
    assert isinstance(response.json["description"], str) and response.json["description"]
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= window_seconds
    assert response.headers["Content-Type"] == "application/json"


def test_login_is_limited_per_client_address(make_app: MakeApp, alice: Account) -> None:
    client = make_app().test_client()
    for n in range(LIMIT):
        assert login_from(client, "10.0.0.1", f"user{n}").status_code == 401

    assert_limited(login_from(client, "10.0.0.1", "someone-else"))
    # Even with the right password: the address is out of attempts.
    assert_limited(login_from(client, "10.0.0.1", alice.username, TEST_PASSWORD))
    # Another address is not.
    assert login_from(client, "10.0.0.2", alice.username, TEST_PASSWORD).status_code == 200


def test_register_is_limited_per_client_address(make_app: MakeApp) -> None:
    client = make_app().test_client()
    for n in range(LIMIT):
        assert register_from(client, "10.0.1.1", f"newcomer{n}").status_code == 201

    assert_limited(register_from(client, "10.0.1.1", "one-too-many"))
    assert register_from(client, "10.0.1.2", "from-elsewhere").status_code == 201


def test_login_is_limited_per_username_across_addresses(
    make_app: MakeApp, alice: Account, bob: Account
) -> None:
    """Guessing one account's password from many addresses is limited too."""
    client = make_app(ratelimit_login_per_username=f"{LIMIT}/hour").test_client()
    for n in range(LIMIT):
        assert login_from(client, f"10.0.2.{n + 1}", alice.username).status_code == 401

    # A fresh address, the same account (any spelling of its name): limited.
    assert_limited(login_from(client, "10.0.2.99", alice.username, TEST_PASSWORD), HOUR)
    assert_limited(login_from(client, "10.0.2.98", f"  {alice.username.upper()} "), HOUR)
    # Another account from a fresh address is not.
    assert login_from(client, "10.0.2.97", bob.username, TEST_PASSWORD).status_code == 200


def test_register_is_limited_per_username_across_addresses(make_app: MakeApp) -> None:
    client = make_app().test_client()
    statuses = [register_from(client, f"10.0.3.{n + 1}", "contested").status_code for n in range(3)]
    assert statuses == [201, 409, 409]
    assert_limited(register_from(client, "10.0.3.99", "contested"))


def test_the_default_auth_limit_is_ten_a_minute(make_app: MakeApp) -> None:
    client = make_app(auth=None).test_client()
    statuses = [login_from(client, "10.0.4.1", f"user{n}").status_code for n in range(11)]
    assert statuses == [401] * 10 + [429]


def test_an_empty_default_limit_leaves_other_endpoints_unlimited(
    make_app: MakeApp, alice: Account, bob: Account
) -> None:
    client = make_app(ratelimit_default="").test_client()
    token = login_from(client, "10.0.5.1", alice.username, TEST_PASSWORD).json
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert "X-RateLimit-Limit" not in client.get("/tasks", headers=headers).headers
    for _ in range(3 * LIMIT):
        assert client.get("/health", environ_base={"REMOTE_ADDR": "10.0.5.1"}).status_code == 200
        assert client.get("/ready", environ_base={"REMOTE_ADDR": "10.0.5.1"}).status_code == 200
        assert client.get("/tasks", headers=headers).status_code == 200
        assert client.get("/me", headers=headers).status_code == 200
        created = client.post("/task", json={"task_name": "not limited"}, headers=headers)
        assert created.status_code == 201
    refresh_token = token["refresh_token"]
    for _ in range(2 * LIMIT):  # each rotation spends the token and hands out the next
        rotated = client.post("/token/refresh", json={"refresh_token": refresh_token})
        assert rotated.status_code == 200, rotated.json
        refresh_token = rotated.json["refresh_token"]


def test_an_app_with_limits_off_is_not_limited_by_one_with_limits_on(
    app: APIFlask, client: FlaskClient, make_app: MakeApp, alice: Account
) -> None:
    """Each app enforces its own settings, whatever other apps the process built since."""
    limited = make_app().test_client()
    for n in range(LIMIT):
        assert login_from(limited, "10.0.6.1", f"user{n}").status_code == 401
    assert_limited(login_from(limited, "10.0.6.1", "user"))

    # The `app` fixture (limits off), after an app with limits on was built.
    for _ in range(4 * LIMIT):
        assert login_from(client, "10.0.6.1", alice.username).status_code == 401

    # And an app with limits on, after one with limits off was built.
    make_app(ratelimit_enabled=False)
    assert_limited(login_from(limited, "10.0.6.1", "user"))


def test_apps_without_redis_count_apart(make_app: MakeApp) -> None:
    """In-memory counts are per process (per app here): two apps do not share them."""
    first, second = make_app().test_client(), make_app().test_client()
    for n in range(LIMIT):
        assert login_from(first, "10.0.7.1", f"user{n}").status_code == 401
    assert_limited(login_from(first, "10.0.7.1", "user"))
    assert login_from(second, "10.0.7.1", "user").status_code == 401


def test_limits_are_shared_through_redis_by_every_app(make_app: MakeApp, tmp_path: Path) -> None:
    """Two apps (two workers) on one Redis: the attempts made through either count for both."""
    with running_redis(tmp_path) as redis_server:
        shared = {"redis_url": redis_server.url, "ratelimit_login_per_username": f"{LIMIT}/hour"}
        first = make_app(**shared).test_client()
        second = make_app(**shared).test_client()

        assert login_from(first, "10.0.8.1", "user1").status_code == 401
        assert login_from(second, "10.0.8.1", "user2").status_code == 401
        assert login_from(first, "10.0.8.1", "user3").status_code == 401
        assert_limited(login_from(second, "10.0.8.1", "user4"))
        assert_limited(login_from(first, "10.0.8.1", "user5"))

        # Failed logins per username too, across apps and addresses (counted after the answer).
        for n, client in enumerate((first, second, first)):
            assert login_from(client, f"10.0.9.{n}", "shared-name").status_code == 401
        assert_limited(login_from(second, "10.0.9.99", "shared-name"), HOUR)

        # The counts are in Redis.
        keys = [
            k.decode() if isinstance(k, bytes) else str(k) for k in redis_server.client().keys("*")
        ]
        assert any("ip:10.0.8.1" in k for k in keys), keys
        assert any("username:shared-name" in k for k in keys), keys
