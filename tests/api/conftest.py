"""Fixtures and helpers shared by the tests of the hot-path middleware (app.api.hot_paths)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apiflask import APIFlask
from flask import Flask
from flask.testing import FlaskClient

from app.api.hot_paths import HotPaths
from tests.conftest import Account


@pytest.fixture
def flask_dispatches(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths Flask itself dispatched during the test (the hot-path middleware answered the
    rest)."""
    seen: list[str] = []
    original = Flask.full_dispatch_request

    def spy(self: Flask) -> Any:
        from flask import request

        seen.append(request.path)
        return original(self)

    monkeypatch.setattr(Flask, "full_dispatch_request", spy)
    yield seen


def hot_paths_of(application: APIFlask) -> HotPaths:
    middleware = application.wsgi_app
    assert isinstance(middleware, HotPaths)
    return middleware


def logged_in_and_remembered(client: FlaskClient, account: Account) -> dict[str, str]:
    """Log `account` in on `client` and make one read, after which the process remembers the
    session (the hot-path middleware takes its requests); its Authorization header."""
    response = client.post(
        "/login", json={"username": account.username, "password": account.password}
    )
    headers = {"Authorization": f"Bearer {response.json['access_token']}"}
    assert client.get("/tasks", headers=headers).status_code == 200
    return headers
