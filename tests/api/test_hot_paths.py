"""Cache hits answered in front of Flask (app.api.hot_paths): the same answer, headers, log
line and metrics as a hit served through Flask, and Flask keeps everything the hot-path
middleware does not know how to answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import Client, TestResponse

from app.models.types import MAX_ID
from app.observability.logging import USER_ID_ENVIRON
from tests.api.conftest import hot_paths_of, logged_in_and_remembered
from tests.api.test_observability import LogLines, log_lines, scrape, value  # noqa: F401
from tests.conftest import Account
from tests.conftest import test_settings as settings_for
from tests.reliability.helpers import side_app

Headers = dict[str, str]
Login = Callable[[Account], Headers]


def test_a_remembered_callers_hit_is_answered_before_flask(
    app: APIFlask,
    client: FlaskClient,
    alice: Account,
    login: Login,
    flask_dispatches: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = login(alice)
    assert client.post("/task", json={"task_name": "t"}, headers=headers).status_code == 201
    miss = client.get("/tasks", headers=headers)
    assert miss.headers["X-Cache"] == "MISS"
    flask_dispatches.clear()
    environs: list[dict[str, Any]] = []
    inner = app.wsgi_app

    def seen_by_the_server(environ: dict[str, Any], start_response: Any) -> Any:
        environs.append(environ)
        return inner(environ, start_response)

    monkeypatch.setattr(app, "wsgi_app", seen_by_the_server)

    hit = client.get("/tasks", headers=headers)

    assert flask_dispatches == []
    assert (hit.status_code, hit.headers["X-Cache"]) == (200, "HIT")
    assert hit.get_data() == miss.get_data()
    assert environs[0][USER_ID_ENVIRON] == alice.id  # for gunicorn's access line


def test_a_hot_path_hit_carries_the_headers_a_flask_hit_does(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = {**login(alice), "X-Request-ID": "hot-path-1"}
    client.post("/task", json={"task_name": "t"}, headers=headers)
    client.get("/tasks", headers=headers)  # cached

    through_flask = Client(hot_paths_of(app).next_app).get("/tasks", headers=headers)
    answered_early = client.get("/tasks", headers=headers)

    assert through_flask.headers["X-Cache"] == answered_early.headers["X-Cache"] == "HIT"
    assert set(answered_early.headers.keys()) == set(through_flask.headers.keys())
    for name, flask_value in through_flask.headers.items():
        assert answered_early.headers[name] == flask_value, name
    assert answered_early.get_data() == through_flask.get_data()


def test_if_none_match_answers_304_from_the_hot_paths(
    client: FlaskClient, alice: Account, login: Login, flask_dispatches: list[str]
) -> None:
    headers = login(alice)
    etag = client.get("/tasks", headers=headers).headers["ETag"]
    flask_dispatches.clear()

    not_modified = client.get("/tasks", headers={**headers, "If-None-Match": etag})

    assert flask_dispatches == []
    assert not_modified.status_code == 304
    assert not_modified.headers["ETag"] == etag and not_modified.get_data() == b""


def test_a_hot_path_hit_is_logged_and_counted(
    app: APIFlask,
    alice: Account,
    log_lines: LogLines,  # noqa: F811
) -> None:
    client = app.test_client()
    headers = logged_in_and_remembered(client, alice)
    before = value(scrape(client), "http_requests_total", endpoint="/tasks", status="200")
    hits_before = value(scrape(client), "cache_lookups_total", result="hit")

    hit = client.get("/tasks", headers={**headers, "X-Request-ID": "logged-hit"})

    assert hit.headers["X-Cache"] == "HIT"
    after = scrape(client)
    assert value(after, "http_requests_total", endpoint="/tasks", status="200") == before + 1
    assert value(after, "cache_lookups_total", result="hit") == hits_before + 1
    [line] = [x for x in log_lines() if x.get("request_id") == "logged-hit"]
    assert line["logger"] == "app.request"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/tasks", 200)
    assert line["user_id"] == alice.id and line["latency_ms"] >= 0


def test_flask_answers_what_the_hot_paths_does_not_know(
    client: FlaskClient, alice: Account, login: Login, flask_dispatches: list[str]
) -> None:
    headers = login(alice)
    client.get("/tasks", headers=headers)
    assert client.get("/tasks", headers=headers).headers["X-Cache"] == "HIT"
    flask_dispatches.clear()

    assert client.get("/tasks", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert client.get(f"/task/{MAX_ID + 1}", headers=headers).status_code == 404
    assert client.get("/tasks?page=0", headers=headers).status_code == 422
    assert client.head("/tasks", headers=headers).status_code == 200
    assert client.get("/me", headers=headers).status_code == 200  # not a cached endpoint
    assert len(flask_dispatches) == 5


@pytest.mark.parametrize(
    "overrides",
    [
        {"cors_origins": ["https://app.example.com"]},
        {"ratelimit_enabled": True, "ratelimit_default": "1000/minute"},
    ],
    ids=["cors", "default-rate-limit"],
)
def test_the_hot_paths_is_off_where_flask_hooks_must_see_every_request(
    app: APIFlask, overrides: dict[str, Any]
) -> None:
    settings = settings_for(app.config["SQLALCHEMY_DATABASE_URI"], **overrides)
    with side_app(settings) as application:
        assert hot_paths_of(application).enabled is False


def test_a_default_rate_limit_counts_cached_reads_too(app: APIFlask, alice: Account) -> None:
    settings = settings_for(
        app.config["SQLALCHEMY_DATABASE_URI"], ratelimit_enabled=True, ratelimit_default="3/minute"
    )
    with side_app(settings) as application:
        client = application.test_client()
        tokens = client.post(
            "/login", json={"username": alice.username, "password": alice.password}
        ).json
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        statuses = [client.get("/tasks", headers=headers).status_code for _ in range(4)]
        assert statuses[:3] == [200, 200, 200] and statuses[3] == 429


def test_a_request_the_hot_paths_read_for_but_missed_reads_nothing_twice(
    app: APIFlask, alice: Account, login: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A miss is handed to Flask with the answer and counters already read: one lookup."""
    client = app.test_client()
    headers = login(alice)
    client.get("/tasks", headers=headers)  # the session is remembered from here on
    cache = app.extensions["response_cache"]
    lookups: list[str] = []
    original = cache.lookup

    def counting(prefix: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(prefix)
        return original(prefix, *args, **kwargs)

    monkeypatch.setattr(cache, "lookup", counting)
    miss: TestResponse = client.get("/tasks?per_page=7", headers=headers)

    assert miss.headers["X-Cache"] == "MISS"
    assert [p for p in lookups if not p.startswith("count:")] == [lookups[0]]
    assert len([p for p in lookups if not p.startswith("count:")]) == 1


def test_a_failing_hot_path_leaves_the_answer_to_flask(
    client: FlaskClient, alice: Account, login: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = login(alice)
    expected = client.get("/tasks", headers=headers)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("app.api.hot_paths.prefetch", broken)
    answer = client.get("/tasks", headers=headers)

    assert answer.status_code == 200 and answer.get_data() == expected.get_data()
