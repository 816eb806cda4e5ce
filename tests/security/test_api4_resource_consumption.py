"""API4 Unrestricted Resource Consumption: every oversized or pathological input is a quick, clear
4xx (never a 500, never slow), and the limits hold: page size, JSON body, CSV upload, login rate.

The 413/429 basics are in tests/api (test_errors, test_csv_import, test_rate_limits); these add
the anonymous and cross-endpoint cases and the time bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import Account, side_app
from tests.conftest import test_settings as settings_for
from tests.security.helpers import count_rows, snapshot

Login = Callable[[Account], dict[str, str]]
ONE_MIB = 1024 * 1024
QUICK_SECONDS = 5.0
LONG = "9" * 10_000


def timed(send: Callable[[], TestResponse]) -> TestResponse:
    started = time.monotonic()
    response = send()
    elapsed = time.monotonic() - started
    assert elapsed < QUICK_SECONDS, f"took {elapsed:.1f}s"
    return response


@pytest.fixture
def headers(admin: Account, login: Login) -> dict[str, str]:
    return login(admin)


@pytest.fixture
def side(app: APIFlask) -> Iterator[Callable[..., APIFlask]]:
    """Apps with other limits, on the `app` fixture's database."""
    apps: list[Any] = []

    def _make(**overrides: Any) -> APIFlask:
        cm = side_app(settings_for(app.config["SQLALCHEMY_DATABASE_URI"], **overrides))
        apps.append(cm)
        return cm.__enter__()

    yield _make
    for cm in reversed(apps):
        cm.__exit__(None, None, None)


@pytest.mark.parametrize("url", ["/tasks", "/admin/users", "/task/1/history", "/task/1/logs"])
def test_per_page_is_capped_at_100(client: FlaskClient, headers: dict[str, str], url: str) -> None:
    created = client.post("/task", json={"task_name": "t"}, headers=headers)
    url = url.replace("/1/", f"/{created.json['id']}/")
    assert client.get(f"{url}?per_page=101", headers=headers).status_code == 422
    assert client.get(f"{url}?per_page=100", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "auth"),
    [
        ("POST", "/register", False),
        ("POST", "/login", False),
        ("POST", "/token/refresh", False),
        ("POST", "/task", True),
        ("PUT", "/task/1", True),
        ("PATCH", "/me", True),
        ("PATCH", "/admin/users/1", True),
        ("POST", "/admin/jobs/daily-log", True),
    ],
)
def test_a_json_body_over_one_mib_is_413_on_every_endpoint(
    app: APIFlask, client: FlaskClient, headers: dict[str, str], method: str, url: str, auth: bool
) -> None:
    before = snapshot(app)
    body = '{"task_name": "' + "x" * ONE_MIB + '"}'
    response = timed(
        lambda: client.open(
            url,
            method=method,
            data=body,
            content_type="application/json",
            headers=headers if auth else {},
        )
    )
    assert response.status_code == 413, response.json
    assert response.json["code"] == 413
    assert snapshot(app) == before


def test_a_csv_over_the_limit_is_413_whoever_sends_it(
    app: APIFlask, side: Callable[..., APIFlask], moderator: Account
) -> None:
    client = side(csv_max_upload_bytes=1000).test_client()
    token = client.post(
        "/login", json={"username": moderator.username, "password": moderator.password}
    )
    big = b"task_name,status,priority\n" + b"a task,TRUE,LOW\n" * 5000
    for auth in ({"Authorization": f"Bearer {token.json['access_token']}"}, {}):
        data = {"file": (BytesIO(big), "big.csv")}
        response = timed(lambda: client.post("/upload-csv", data=data, headers=auth))  # noqa: B023
        assert response.status_code in (401, 413), response.json
        if auth:
            assert response.status_code == 413
    assert count_rows(app, "task_manager") == 0


def test_a_login_flood_is_answered_429_quickly(
    side: Callable[..., APIFlask], alice: Account
) -> None:
    client = side(ratelimit_enabled=True, ratelimit_auth="5/minute").test_client()
    statuses = [
        timed(
            lambda: client.post("/login", json={"username": "alice", "password": "guess"})
        ).status_code
        for _ in range(8)
    ]
    assert statuses == [401] * 5 + [429] * 3
    # The right password does not get through the limit either.
    right = client.post("/login", json={"username": "alice", "password": alice.password})
    assert right.status_code == 429


@pytest.mark.parametrize("url", ["/register", "/login", "/token/refresh", "/task"])
def test_deeply_nested_json_is_a_quick_400(
    client: FlaskClient, headers: dict[str, str], url: str
) -> None:
    body = '{"task_name": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = timed(
        lambda: client.post(url, data=body, content_type="application/json", headers=headers)
    )
    assert response.status_code == 400, response.json


@pytest.mark.parametrize(
    "body",
    [
        {"task_name": "x" * (ONE_MIB - 100)},
        {"task_name": "t", "description": "d" * (ONE_MIB - 100)},
        {"task_name": ["x"] * 150_000},
        {f"k{i}": i for i in range(60_000)},
    ],
    ids=["1mb-name", "1mb-description", "huge-array", "60k-keys"],
)
def test_huge_values_just_under_the_body_limit_are_a_quick_422(
    app: APIFlask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any]
) -> None:
    response = timed(lambda: client.post("/task", json=body, headers=headers))
    assert response.status_code == 422
    assert len(response.get_data()) < 64 * 1024, "the error must not echo the input back"
    assert count_rows(app, "task_manager") == 0


@pytest.mark.parametrize(
    "query",
    [
        f"q={'x' * 10_000}",
        f"sort={'a' * 10_000}",
        f"sort={'id,' * 3_000}id",
        f"status={LONG}",
        f"priority={LONG}",
        f"assigned_user={LONG}",
        f"page={LONG}",
        f"per_page={LONG}",
        f"created_from={LONG}",
        f"date={LONG}",
        f"deleted={LONG}",
        f"{'z' * 10_000}=1",
        "&".join(f"p{i}=1" for i in range(2_000)),
    ],
    ids=lambda q: q[:12],
)
def test_very_long_query_parameters_are_a_quick_422(
    client: FlaskClient, headers: dict[str, str], query: str
) -> None:
    response = timed(lambda: client.get(f"/tasks?{query}", headers=headers))
    assert response.status_code == 422, response.json
    assert len(response.get_data()) < 64 * 1024


@pytest.mark.parametrize("query", [f"role={LONG}", f"is_active={LONG}", f"page={LONG}"])
def test_very_long_admin_query_parameters_are_a_quick_422(
    client: FlaskClient, headers: dict[str, str], query: str
) -> None:
    response = timed(lambda: client.get(f"/admin/users?{query}", headers=headers))
    assert response.status_code == 422
