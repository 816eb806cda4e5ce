"""A URL or headers over the configured limits answer 414 or 431 in the API's JSON error, from
the app, below the limits of the servers in front of it (which answer with an empty body, granian,
or an HTML page, werkzeug's development server)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from app.config import Settings
from tests.api.test_errors import assert_error_shape
from tests.conftest import Account
from tests.live_server import serving

Login = Callable[[Account], dict[str, str]]


def _settings(app: APIFlask) -> Settings:
    settings: Settings = app.config["SETTINGS"]
    return settings


def test_a_url_over_the_limit_is_414(app: APIFlask, client: FlaskClient) -> None:
    limit = _settings(app).max_url_bytes
    path = "/tasks?q="

    response = client.get(path + "x" * (limit - len(path) + 1))

    body = assert_error_shape(response, 414)
    assert str(limit) in body["description"]


def test_a_url_at_the_limit_reaches_the_api(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    path = "/tasks?q="
    url = path + "x" * (_settings(app).max_url_bytes - len(path))

    response = client.get(url, headers=login(alice))

    assert response.status_code == 422  # q is at most 200 characters: validation, not the size
    assert "q" in response.json["errors"]["query"]


def test_more_headers_than_the_limit_is_431(app: APIFlask, client: FlaskClient) -> None:
    count = _settings(app).max_header_count
    headers = {f"X-Extra-{n}": "1" for n in range(count + 1)}

    response = client.get("/health", headers=headers)

    body = assert_error_shape(response, 431)
    assert str(count) in body["description"]


def test_headers_larger_than_the_limit_are_431(app: APIFlask, client: FlaskClient) -> None:
    size = _settings(app).max_header_bytes

    response = client.get("/health", headers={"X-Big": "b" * size})

    body = assert_error_shape(response, 431)
    assert str(size) in body["description"]


def test_limits_apply_before_authentication(app: APIFlask, client: FlaskClient) -> None:
    # No token: still the size's answer, not 401 (nothing else looks at such a request).
    response = client.get("/admin/users?role=" + "r" * _settings(app).max_url_bytes)

    assert_error_shape(response, 414)


def test_the_limits_stay_below_the_servers(app: APIFlask) -> None:
    settings = _settings(app)
    # granian: 65,534-byte URLs, 100 headers; werkzeug's server: 65,536-byte lines, 100 headers.
    assert settings.max_url_bytes < 65_534
    assert settings.max_header_bytes < 65_536
    assert settings.max_header_count < 100
    with pytest.raises(ValueError, match="max_url_bytes"):
        Settings(_env_file=None, max_url_bytes=70_000)  # type: ignore[call-arg]


def _raw_get(base_url: str, target: str, headers: dict[str, str]) -> tuple[int, str, str]:
    """A GET sent as is (no client-side limits), and the answer's status, type and body."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


def test_over_http_the_app_answers_json_before_the_server_would(app: APIFlask) -> None:
    settings = _settings(app)
    with serving(app) as base_url:
        status, kind, text = _raw_get(base_url, "/tasks?q=" + "x" * settings.max_url_bytes, {})
        assert (status, kind) == (414, "application/json")
        assert json.loads(text)["code"] == 414

        many = {f"X-Extra-{n}": "1" for n in range(settings.max_header_count + 1)}
        status, kind, text = _raw_get(base_url, "/health", many)
        assert (status, kind) == (431, "application/json")
        assert json.loads(text)["code"] == 431
