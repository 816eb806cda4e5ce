"""API8 Security Misconfiguration: the security headers are on every kind of response, HSTS only
where the service is served over HTTPS (staging, production), and CORS answers only the
configured origins (none configured: no CORS headers at all)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.config import AppEnv
from tests.conftest import Account, side_app
from tests.conftest import test_settings as settings_for

Login = Callable[[Account], dict[str, str]]
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ALLOWED_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., APIFlask]]:
    """Fresh apps on a SQLite file of their own (routes can be added before a first request)."""
    stack: list[Any] = []

    def _make(**overrides: Any) -> APIFlask:
        cm = side_app(settings_for(f"sqlite:///{tmp_path / f'h{len(stack)}.db'}", **overrides))
        stack.append(cm)
        return cm.__enter__()

    yield _make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def _all_kinds(app: APIFlask, login_as: Account) -> list[TestResponse]:
    client = app.test_client()
    token = client.post(
        "/login", json={"username": login_as.username, "password": login_as.password}
    )
    headers = {"Authorization": f"Bearer {token.json['access_token']}"}
    created = client.post("/task", json={"task_name": "h"}, headers=headers)
    url = created.headers["Location"]
    got = client.get(url, headers=headers)
    responses = [
        got,
        created,
        client.get(url, headers={**headers, "If-None-Match": got.headers["ETag"]}),
        client.delete(url, headers=headers),
        client.get("/tasks"),
        client.get("/nowhere"),
        client.post(
            "/task", data="x" * (1024 * 1024 + 1), content_type="application/json", headers=headers
        ),
        client.post("/task", data="task_name=x", content_type="text/plain", headers=headers),
        client.post("/task", json={}, headers=headers),
        client.post("/upload-csv", data={"file": (BytesIO(b"x"), "x.csv")}, headers=headers),
        client.get("/boom"),
        client.get("/apidocs"),
        client.get("/openapi.json"),
        client.options("/tasks"),
        client.get("/health"),
    ]
    statuses = {r.status_code for r in responses}
    assert {200, 201, 204, 304, 401, 404, 413, 415, 422, 500} <= statuses, statuses
    return responses


def _with_boom(application: APIFlask) -> APIFlask:
    @application.get("/boom")
    def boom() -> dict[str, str]:
        raise RuntimeError("boom")

    return application


def _admin(application: APIFlask) -> Account:
    from app.extensions import db
    from app.models import Role, User
    from app.services.context import passwords

    with application.app_context():
        db.create_all()
        user = User(
            username="hdr_admin",
            email="hdr@example.com",
            password_hash=passwords().hash("correct horse battery"),
            role=Role.ADMIN,
        )
        db.session.add(user)
        db.session.commit()
        return Account(id=user.id, username="hdr_admin", role=Role.ADMIN)


def test_security_headers_on_every_response_type_and_no_hsts_outside_https(
    make_app: Callable[..., APIFlask],
) -> None:
    application = _with_boom(make_app())
    for response in _all_kinds(application, _admin(application)):
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.status_code, name)
        assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize("env", [AppEnv.STAGING, AppEnv.PRODUCTION])
def test_hsts_on_every_response_in_staging_and_production(
    make_app: Callable[..., APIFlask], env: AppEnv
) -> None:
    application = _with_boom(make_app(app_env=env))
    for response in _all_kinds(application, _admin(application)):
        assert response.headers.get("Strict-Transport-Security", "").startswith("max-age="), (
            response.status_code
        )
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value


def test_without_configured_origins_there_are_no_cors_headers(
    client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = {**login(alice), "Origin": ALLOWED_ORIGIN}
    for response in (
        client.get("/tasks", headers=headers),
        client.get("/health", headers={"Origin": OTHER_ORIGIN}),
        client.options(
            "/tasks", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"}
        ),
    ):
        assert not any(h.lower().startswith("access-control-") for h, _ in response.headers)


def test_only_configured_origins_get_cors_headers(make_app: Callable[..., APIFlask]) -> None:
    application = make_app(cors_origins=[ALLOWED_ORIGIN, "https://admin.example.com"])
    account = _admin(application)
    client = application.test_client()
    token = client.post("/login", json={"username": account.username, "password": account.password})
    auth = {"Authorization": f"Bearer {token.json['access_token']}"}

    allowed = client.get("/tasks", headers={**auth, "Origin": ALLOWED_ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    exposed = {
        h.strip().lower() for h in allowed.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {"etag", "link", "x-cache", "x-request-id", "location", "retry-after"} <= exposed
    assert "Access-Control-Allow-Credentials" not in allowed.headers

    for origin in (OTHER_ORIGIN, "null", ALLOWED_ORIGIN + ".evil.net", "http://app.example.com"):
        refused = client.get("/tasks", headers={**auth, "Origin": origin})
        assert refused.status_code == 200
        assert "Access-Control-Allow-Origin" not in refused.headers, origin

    preflight = client.options(
        "/task/1",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "Authorization, Content-Type, If-Match",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    allow = {
        h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "if-match"} <= allow
    for name in SECURITY_HEADERS:
        assert name in preflight.headers

    foreign_preflight = client.options(
        "/task/1", headers={"Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "DELETE"}
    )
    assert "Access-Control-Allow-Origin" not in foreign_preflight.headers
    # An error answer to an allowed origin carries CORS too (the browser can read the error).
    missing = client.get("/nowhere", headers={"Origin": ALLOWED_ORIGIN})
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
