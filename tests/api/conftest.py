"""Fixtures and helpers shared by the tests of the hot-path middleware (app.api.hot_paths)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apiflask import APIFlask
from flask import Flask

from app.api.hot_paths import HotPaths


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
