"""Shared state no account holder can exhaust or poison (issue #23, findings 1-5).

- An answer over CACHE_MAX_ANSWER_BYTES is served but never stored.
- Query parameters form the cache key URL-encoded in one canonical order: a value holding `&`
  and `=` is not another question's parameters; repeated sort fields are refused (422).
- `Link` headers never carry the request's `Host`: relative, or under EXTERNAL_URL.
- Behind TRUSTED_PROXY_HOPS proxies each client has its own rate-limit bucket; with 0 a forged
  X-Forwarded-For changes nothing.
- Metrics label an invented HTTP method `other`; production serves `/metrics` only with
  METRICS_TOKEN.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from werkzeug.datastructures import MultiDict

from app.api.caching import cache_key_prefix
from app.config import AppEnv
from app.models import Role
from app.observability.metrics import KNOWN_METHODS
from app.services.actor import Actor
from app.services.sessions import Principal
from tests.conftest import TEST_PASSWORD, Account, add_tasks, side_app
from tests.conftest import test_settings as settings_for

MakeApp = Callable[..., APIFlask]


@pytest.fixture
def make_app(app: APIFlask) -> Iterator[MakeApp]:
    """Apps with other settings on the `app` fixture's database."""
    with contextlib.ExitStack() as stack:

        def _make(**overrides: Any) -> APIFlask:
            url = app.config["SQLALCHEMY_DATABASE_URI"]
            return stack.enter_context(side_app(settings_for(url, **overrides)))

        yield _make


# --- the cache's size bound ----------------------------------------------------------------


def test_an_answer_over_the_size_bound_is_served_but_not_cached(
    app: APIFlask,
    client: FlaskClient,
    moderator: Account,
    login: Callable[[Account], dict[str, str]],
) -> None:
    # 100 tasks of 60,000 characters each: the 6 MB answer of the finding (written to the
    # database directly: the API refuses control characters and descriptions this long).
    add_tasks(app, moderator, 100, "\x01" * 10_000)
    headers = login(moderator)
    big = [client.get("/tasks?per_page=100", headers=headers) for _ in range(2)]
    assert all(r.status_code == 200 for r in big)
    assert len(big[0].get_data()) > 6_000_000
    assert [r.headers["X-Cache"] for r in big] == ["MISS", "MISS"]
    assert big[0].get_data() == big[1].get_data()
    # A small answer of the same list is cached as before.
    small = [client.get("/tasks?per_page=1", headers=headers) for _ in range(2)]
    assert [r.headers["X-Cache"] for r in small] == ["MISS", "HIT"]


def test_the_bound_is_a_setting(
    make_app: MakeApp, moderator: Account, make_user: Callable[..., Account]
) -> None:
    small_bound = make_app(cache_max_answer_bytes=2_000)
    add_tasks(small_bound, moderator, 5, "x" * 1_000)
    client = small_bound.test_client()
    token = client.post(
        "/login", json={"username": moderator.username, "password": TEST_PASSWORD}
    ).json["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert [client.get("/tasks?per_page=5", headers=headers).headers["X-Cache"] for _ in "ab"] == [
        "MISS",
        "MISS",
    ]
    assert [client.get("/tasks?per_page=1", headers=headers).headers["X-Cache"] for _ in "ab"] == [
        "MISS",
        "HIT",
    ]


# --- one question, one key -----------------------------------------------------------------


def key_of(query: str, actor: Actor | None = None) -> str:
    from urllib.parse import parse_qsl

    args = MultiDict(parse_qsl(query, keep_blank_values=True))
    return cache_key_prefix(
        actor or Principal(id=1, role=Role.MODERATOR, family_id="f"), "tasks.list_tasks", {}, args
    )


def test_a_value_holding_separators_is_not_another_questions_parameters() -> None:
    assert key_of("q=t%26sort%3Did") != key_of("q=t&sort=id")
    assert key_of("q=a%3Db") != key_of("q=a=b&x=")


def test_the_same_parameters_in_another_order_share_one_key() -> None:
    assert key_of("status=active&page=2") == key_of("page=2&status=active")


def test_colliding_queries_get_their_own_answers(
    app: APIFlask,
    client: FlaskClient,
    moderator: Account,
    make_user: Callable[..., Account],
    login: Callable[[Account], dict[str, str]],
) -> None:
    """The finding: one moderator's answer to `q=t&sort=id` was served to another asking for
    tasks whose name holds `t&sort=id`."""
    other = make_user("mod_other", Role.MODERATOR)
    add_tasks(app, moderator, 3, "plain")
    first = client.get("/tasks?q=t&sort=id", headers=login(moderator))
    assert first.status_code == 200 and first.json["total"] == 3
    second = client.get("/tasks?q=t%26sort%3Did", headers=login(other))
    assert second.status_code == 200
    assert second.headers["X-Cache"] == "MISS"
    assert second.json["total"] == 0  # no task's name holds "t&sort=id"


@pytest.mark.parametrize("sort", ["id,id", "-id,id", "priority,-created_at,priority"])
def test_a_repeated_sort_field_is_refused(
    client: FlaskClient, alice: Account, login: Callable[[Account], dict[str, str]], sort: str
) -> None:
    response = client.get(f"/tasks?sort={sort}", headers=login(alice))
    assert response.status_code == 422
    assert "more than once" in str(response.json["errors"])


def test_control_characters_are_refused_in_task_text(
    client: FlaskClient, alice: Account, login: Callable[[Account], dict[str, str]]
) -> None:
    headers = login(alice)
    for body in ({"task_name": "a\x01b"}, {"task_name": "ok", "description": "\x1b[2J"}):
        response = client.post("/task", json=body, headers=headers)
        assert response.status_code == 422, body
    kept = client.post(
        "/task", json={"task_name": "ok", "description": "line\n\tindented\r\n"}, headers=headers
    )
    assert kept.status_code == 201


# --- links -----------------------------------------------------------------------------------


def test_a_poisoned_host_is_not_in_another_callers_links(
    app: APIFlask,
    client: FlaskClient,
    moderator: Account,
    make_user: Callable[..., Account],
    login: Callable[[Account], dict[str, str]],
) -> None:
    other = make_user("mod_other", Role.MODERATOR)
    add_tasks(app, moderator, 3, "plain")
    poisoned = client.get("/tasks?per_page=1", headers={**login(moderator), "Host": "evil.example"})
    assert poisoned.status_code == 200
    assert "evil.example" not in poisoned.headers["Link"]
    shared = client.get("/tasks?per_page=1", headers=login(other))
    assert shared.headers["X-Cache"] == "HIT"
    assert "evil.example" not in shared.headers["Link"]
    assert '</tasks?per_page=1&page=2>; rel="next"' in shared.headers["Link"]


def test_links_are_absolute_under_the_external_url(make_app: MakeApp, moderator: Account) -> None:
    behind = make_app(external_url="https://api.example.com/v1/")
    add_tasks(behind, moderator, 3, "plain")
    client = behind.test_client()
    token = client.post(
        "/login", json={"username": moderator.username, "password": TEST_PASSWORD}
    ).json["access_token"]
    link = client.get(
        "/tasks?per_page=1",
        headers={"Authorization": f"Bearer {token}", "Host": "evil.example"},
    ).headers["Link"]
    assert '<https://api.example.com/v1/tasks?per_page=1&page=2>; rel="next"' in link
    assert "evil.example" not in link


# --- client addresses behind proxies ---------------------------------------------------------

PROXY = "10.0.0.5"


def register_via_proxy(client: FlaskClient, forwarded_for: str, username: str) -> int:
    response = client.post(
        "/register",
        json={"username": username, "email": f"{username}@example.com", "password": TEST_PASSWORD},
        headers={"X-Forwarded-For": forwarded_for},
        environ_base={"REMOTE_ADDR": PROXY},
    )
    return response.status_code


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(make_app: MakeApp) -> None:
    client = make_app(
        trusted_proxy_hops=1, ratelimit_enabled=True, ratelimit_auth="2/minute"
    ).test_client()
    assert [register_via_proxy(client, "203.0.113.1", f"first{n}") for n in range(3)] == [
        201,
        201,
        429,
    ]
    # Another client behind the same load balancer is not held up by the first.
    assert register_via_proxy(client, "203.0.113.2", "second0") == 201
    # What a client writes itself, left of what the proxy appended, is not its address.
    assert register_via_proxy(client, "203.0.113.2, 203.0.113.1", "forged0") == 429


def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(
    make_app: MakeApp,
) -> None:
    client = make_app(ratelimit_enabled=True, ratelimit_auth="2/minute").test_client()
    codes = [register_via_proxy(client, f"203.0.113.{n}", f"user{n}") for n in range(1, 4)]
    assert codes == [201, 201, 429]


# --- metrics ---------------------------------------------------------------------------------


def method_labels() -> set[str]:
    return {
        sample.labels["method"]
        for metric in REGISTRY.collect()
        if metric.name == "http_requests"
        for sample in metric.samples
        if "method" in sample.labels
    }


def test_invented_methods_add_no_series(client: FlaskClient) -> None:
    before = method_labels()
    for n in range(50):
        response = client.open("/tasks", method=f"INVENTED{n}")
        assert response.status_code in (400, 405, 501)
    after = method_labels()
    assert after <= KNOWN_METHODS | {"other"}, sorted(after - before)
    assert "other" in after


def test_production_does_not_serve_metrics_without_a_token(make_app: MakeApp) -> None:
    production: dict[str, Any] = {
        "app_env": AppEnv.PRODUCTION,
        "secret_key": "p" * 40,
        "jwt_secret_key": "q" * 40,
    }
    assert make_app(**production).test_client().get("/metrics").status_code == 404
    guarded = make_app(**production, metrics_token="m" * 32).test_client()
    assert guarded.get("/metrics").status_code == 401
    served = guarded.get("/metrics", headers={"Authorization": f"Bearer {'m' * 32}"})
    assert served.status_code == 200 and b"http_requests_total" in served.get_data()
    # Development (and tests) keep it open.
    assert make_app().test_client().get("/metrics").status_code == 200
