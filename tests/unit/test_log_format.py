"""LOG_FORMAT: text for people in development (`make run`), JSON elsewhere; the text line carries
the request id (and latency, user id, job id) as the JSON line does."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from flask.testing import FlaskClient

from app.config import AppEnv, Settings
from app.observability import logging as observability_logging
from app.observability.logging import configure_logging, text_formatter

SECRETS = {"secret_key": "s" * 40, "jwt_secret_key": "j" * 40}


@pytest.fixture(autouse=True)
def _no_log_format_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.delenv("APP_ENV", raising=False)


@pytest.mark.parametrize(
    ("app_env", "expected"),
    [
        (AppEnv.DEVELOPMENT, "text"),
        (AppEnv.TESTING, "json"),
        (AppEnv.STAGING, "json"),
        (AppEnv.PRODUCTION, "json"),
    ],
)
def test_the_default_format_follows_the_environment(app_env: AppEnv, expected: str) -> None:
    assert Settings(_env_file=None, app_env=app_env, **SECRETS).log_format == expected


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_format_wins_in_any_environment(
    monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    monkeypatch.setenv("LOG_FORMAT", log_format)
    for app_env in AppEnv:
        assert Settings(_env_file=None, app_env=app_env, **SECRETS).log_format == log_format


def record(message: str, exc_info: bool = False, **extra: object) -> logging.LogRecord:
    error = None
    if exc_info:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            error = sys.exc_info()
    line = logging.LogRecord("app.request", logging.INFO, __file__, 1, message, (), error)
    line.__dict__.update(extra)
    return line


def test_the_text_line_ends_with_its_context() -> None:
    line = text_formatter().format(
        record("GET /tasks 200", request_id="abc-1", latency_ms=1.5, user_id=7, query="x=1")
    )
    assert line.endswith(
        "INFO app.request: GET /tasks 200  latency_ms=1.5 user_id=7 request_id=abc-1"
    )


def test_a_line_without_context_is_plain() -> None:
    line = text_formatter().format(record("starting", request_id=None))
    assert line.endswith("INFO app.request: starting")


def test_the_context_comes_before_a_traceback() -> None:
    first, *rest = text_formatter().format(record("failed", True, request_id="r-9")).splitlines()
    assert first.endswith("failed  request_id=r-9")
    assert rest[0] == "Traceback (most recent call last):"


@pytest.fixture
def text_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the app logs during the test through the real set-up (`configure_logging` in the
    text format), with the stderr it writes to swapped for a buffer."""
    buffer = io.StringIO()
    monkeypatch.setattr(observability_logging, "sys", SimpleNamespace(stderr=buffer))
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("text", "INFO")
    yield buffer
    for installed in list(root.handlers):
        root.removeHandler(installed)
    for saved in saved_handlers:
        root.addHandler(saved)
    root.setLevel(saved_level)


def test_the_request_line_in_text_has_the_request_id(
    client: FlaskClient, text_lines: io.StringIO
) -> None:
    assert client.get("/health", headers={"X-Request-ID": "text-line-1"}).status_code == 200

    (line,) = [line for line in text_lines.getvalue().splitlines() if "text-line-1" in line]
    assert "INFO app.request: GET /health 200  latency_ms=" in line
    assert line.endswith("request_id=text-line-1")
    with pytest.raises(ValueError):
        json.loads(line)
