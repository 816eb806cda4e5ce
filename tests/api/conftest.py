"""Fixtures and helpers shared by the tests of the WSGI shortcut (app.api.cache_shortcut)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apiflask import APIFlask
from flask import Flask

from app.api.cache_shortcut import CacheShortcut


@pytest.fixture
def flask_dispatches(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths Flask itself dispatched during the test (the rest the shortcut answered)."""
    seen: list[str] = []
    original = Flask.full_dispatch_request

    def spy(self: Flask) -> Any:
        from flask import request

        seen.append(request.path)
        return original(self)

    monkeypatch.setattr(Flask, "full_dispatch_request", spy)
    yield seen


def shortcut_of(application: APIFlask) -> CacheShortcut:
    shortcut = application.wsgi_app
    assert isinstance(shortcut, CacheShortcut)
    return shortcut
