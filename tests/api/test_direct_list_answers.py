"""`GET /tasks` misses (the list and the `?date=` view) answered by the hot-path middleware
(app.api.hot_paths) without Flask's dispatch: the very answer Flask's view gives, Link
header included, for each role and query; a query the view refuses is Flask's to answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import Client

from app.cache.invalidation import STAFF_SCOPE, user_scope
from app.cache.store import date_generation, scope_generation
from app.repositories import tasks as task_repo
from app.services import loader
from tests.api.conftest import hot_paths_of
from tests.conftest import Account

Headers = dict[str, str]
Login = Callable[[Account], Headers]
DAY = date(2030, 5, 6)


@pytest.fixture
def listed(
    app: APIFlask, client: FlaskClient, admin: Account, alice: Account, login: Login
) -> None:
    """Seven tasks (some alice's, one deleted after the day was logged) and a logged day."""
    headers = login(admin)
    ids = []
    for n in range(7):
        fields: dict[str, Any] = {"task_name": f"t{n}", "priority": ["LOW", "HIGH"][n % 2]}
        if n % 3 == 0:
            fields["assigned_user_id"] = alice.id
        response = client.post("/task", json=fields, headers=headers)
        assert response.status_code == 201
        ids.append(response.json["id"])
    with app.app_context():
        loader.run_inline(DAY, "test")
    assert client.delete(f"/task/{ids[3]}", headers=headers).status_code == 204


QUERIES = [
    "per_page=3",
    "per_page=3&page=2&sort=-id",
    "per_page=2&page=9",  # beyond the last page
    "priority=high&per_page=2",
    "deleted=include&per_page=4",
    f"date={DAY.isoformat()}&per_page=2&page=2",
    f"date={DAY.isoformat()}&priority=LOW",
    "q=t1",
]


@pytest.mark.parametrize("caller", ["admin", "moderator", "alice"])
def test_a_list_miss_is_answered_before_flask_exactly_as_flask_answers_it(
    request: pytest.FixtureRequest,
    app: APIFlask,
    client: FlaskClient,
    login: Login,
    listed: None,
    flask_dispatches: list[str],
    caller: str,
) -> None:
    account: Account = request.getfixturevalue(caller)
    headers = {**login(account), "X-Request-ID": "direct-list"}
    client.get("/tasks", headers=headers)  # the session is remembered from here on
    cache = app.extensions["response_cache"]
    middleware = hot_paths_of(app)
    # Makes the caller's lists stale (not the global counter: it also guards their session).
    scope = STAFF_SCOPE if caller != "alice" else user_scope(account.id)
    stale = [scope_generation(scope), date_generation(DAY.isoformat())]

    for query in QUERIES:
        cache.bump(stale)
        through_flask = Client(middleware.next_app).get(f"/tasks?{query}", headers=headers)
        cache.bump(stale)
        flask_dispatches.clear()
        answer = client.get(f"/tasks?{query}", headers=headers)

        if through_flask.status_code != 200:  # e.g. a user asking for deleted tasks
            assert answer.status_code == through_flask.status_code, query
            continue
        assert flask_dispatches == [], query
        assert answer.headers["X-Cache"] == "MISS"
        assert answer.get_data() == through_flask.get_data(), query
        assert set(answer.headers.keys()) == set(through_flask.headers.keys()), query
        for name, flask_value in through_flask.headers.items():
            assert answer.headers[name] == flask_value, (query, name)


def test_a_query_the_view_refuses_is_flasks_422(
    client: FlaskClient, alice: Account, login: Login, flask_dispatches: list[str]
) -> None:
    headers = login(alice)
    client.get("/tasks", headers=headers)
    flask_dispatches.clear()

    for query in ["per_page=0", "priority=urgent", "date=yesterday", "sort=password"]:
        response = client.get(f"/tasks?{query}", headers=headers)
        assert response.status_code == 422, query
        assert response.json["code"] == 422

    assert len(flask_dispatches) == 4


def test_a_list_page_read_as_rows_answers_as_one_read_as_objects(
    app: APIFlask,
    client: FlaskClient,
    admin: Account,
    login: Login,
    listed: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """app.repositories.tasks.task_rows_page (the driver's cursor) against tasks_page (ORM)."""
    headers = login(admin)
    cache = app.extensions["response_cache"]
    stale = [scope_generation(STAFF_SCOPE)]
    queries = [q for q in QUERIES if "date=" not in q and "q=" not in q]

    def answers() -> list[bytes]:
        found = []
        for query in queries:
            cache.bump(stale)
            response = client.get(f"/tasks?{query}", headers=headers)
            assert response.status_code == 200
            found.append(response.get_data())
        return found

    as_rows = answers()
    monkeypatch.setattr(task_repo, "task_rows_page", lambda *_args: None)
    assert answers() == as_rows
    assert all(json.loads(body)["items"] for body in as_rows[:2])  # pages with tasks in them
