"""Cursor (keyset) pages of `GET /tasks` and of its date view (issue #24), on both backends.

A walk with `limit` and then `cursor` lists exactly what one numbered page of the same question
lists, for every sort (each direction, several fields, due_date's NULLs last), filter, scope and
day; it meets every task that stays exactly once while tasks are created and deleted between its
pages; a cursor is refused (400) unless this API issued it, unaltered, for the same question;
mixing numbered and cursor paging is a 422; and a cursor page is read without OFFSET or count.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from itsdangerous import URLSafeSerializer
from openapi_schema_validator import OAS31Validator
from sqlalchemy import event, insert, text
from werkzeug.test import TestResponse

from app.api.cursors import CURSOR_SALT, issue_cursor, question_digest, read_cursor
from app.cache.store import GLOBAL_GENERATION
from app.extensions import db
from app.models import Role, Task, TaskPriority, TaskStatus
from app.repositories import keyset
from app.repositories import task_logs as log_repo
from app.repositories import tasks as task_repo
from app.repositories.tasks import TaskFilters, TaskScope
from app.schemas.common import MAX_CURSOR_LENGTH
from app.schemas.tasks import TaskListQuery
from app.services import loader
from tests.conftest import TEST_PASSWORD, Account, side_app
from tests.conftest import test_settings as settings_for

Headers = dict[str, str]
Login = Callable[[Account], Headers]

LINK = re.compile(r'<([^>]+)>;\s*rel="([a-z]+)"')
BASE = datetime(2030, 5, 1, 9, 30, tzinfo=UTC)
DAY = date(2030, 5, 20)
TASKS = 60
NAMES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf")

SORTS = [
    "id",
    "-id",
    "task_name",
    "-task_name",
    "status",
    "-status",
    "priority",
    "-priority",
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "due_date",
    "-due_date",
    "status,-priority",
    "-priority,due_date",
    "-due_date,task_name,-created_at",
    "due_date,id",
    "task_name,-id,status",  # fields after id never decide
]


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    admin: Account
    alice: Account
    bob: Account
    deleted: set[int]  # soft-deleted tasks


def _task_values(n: int, admin: Account, alice: Account, bob: Account) -> dict[str, Any]:
    """Task n: every sort key ties with other tasks', created_at values one microsecond apart,
    due_date NULL for a quarter of the tasks."""
    return {
        "task_name": NAMES[n % len(NAMES)],
        "status": (TaskStatus.ACTIVE, TaskStatus.INACTIVE)[n % 2],
        "priority": list(TaskPriority)[n % 4],
        "created_by_id": alice.id if n % 10 == 0 else admin.id,
        "assigned_user_id": (alice.id, bob.id, None)[n % 3],
        "created_at": BASE + timedelta(minutes=n % 9, microseconds=n % 3),
        "updated_at": BASE + timedelta(seconds=n % 13, microseconds=7),
        "due_date": None if n % 4 == 0 else date(2030, 6, 1) + timedelta(days=n % 5),
    }


@pytest.fixture
def catalogue(app: APIFlask, admin: Account, alice: Account, bob: Account) -> Catalogue:
    with app.app_context():
        rows = [_task_values(n, admin, alice, bob) for n in range(TASKS)]
        db.session.execute(insert(Task), rows)
        db.session.commit()
        ids = sorted(db.session.scalars(db.select(Task.id)))
        deleted = set(ids[::11])
        for task_id in deleted:
            task = db.session.get(Task, task_id)
            assert task is not None
            task.deleted_at = BASE + timedelta(days=1)
        db.session.commit()
    return Catalogue(admin, alice, bob, deleted)


# --- helpers ---------------------------------------------------------------------------------


def links(response: TestResponse) -> dict[str, str]:
    return {rel: url for url, rel in LINK.findall(response.headers.get("Link", ""))}


def numbered(client: FlaskClient, headers: Headers, **params: Any) -> list[int]:
    """The whole list of a question, as one numbered page."""
    response = client.get("/tasks", query_string={**params, "per_page": 100}, headers=headers)
    assert response.status_code == 200, response.json
    assert response.json["total"] == len(response.json["items"]) < 100
    return [item["id"] for item in response.json["items"]]


def walk(
    client: FlaskClient,
    headers: Headers,
    limit: int = 7,
    between: Callable[[int], None] | None = None,
    **params: Any,
) -> list[int]:
    """Every id of a cursor walk, page after page (`between(n)` after page n), checking each
    page's shape, its `next` link and the last page's end."""
    listed: list[int] = []
    query: dict[str, Any] = {**params, "limit": limit}
    for page in range(1, 200):
        response = client.get("/tasks", query_string=query, headers=headers)
        assert response.status_code == 200, response.json
        body = response.json
        assert set(body) == {"items", "next_cursor"}
        listed += [item["id"] for item in body["items"]]
        next_cursor = body["next_cursor"]
        if next_cursor is None:
            assert "next" not in links(response)
            assert len(body["items"]) <= limit
            return listed
        assert len(body["items"]) == limit
        next_url = links(response)["next"]
        parts = urlsplit(next_url)
        assert parts.path == "/tasks" and not parts.netloc
        linked = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert linked == {**{k: str(v) for k, v in query.items()}, "cursor": next_cursor}
        query = {**query, "cursor": next_cursor}
        if between is not None:
            between(page)
    raise AssertionError("the walk never ended")


def first_cursor(client: FlaskClient, headers: Headers, **params: Any) -> str:
    response = client.get("/tasks", query_string={"limit": 3, **params}, headers=headers)
    assert response.status_code == 200, response.json
    cursor: str = response.json["next_cursor"]
    assert cursor
    return cursor


def assert_refused_cursor(response: TestResponse) -> None:
    assert response.status_code == 400, response.json
    assert response.is_json
    body = response.json
    assert (body["code"], body["message"]) == (400, "Bad Request")
    assert isinstance(body["description"], str) and body["description"]
    assert list(body["errors"]) == ["query"] and list(body["errors"]["query"]) == ["cursor"]


def assert_paging_mixed(response: TestResponse, *fields: str) -> None:
    assert response.status_code == 422, response.json
    assert set(response.json["errors"]["query"]) == set(fields)


def _terms(sort: str) -> Iterator[tuple[str, bool]]:
    """`-a,b` as the repository's sort terms."""
    for term in sort.split(","):
        yield term.lstrip("-"), term.startswith("-")


def _forget_cached_answers(client: FlaskClient) -> None:
    application: Any = client.application
    application.extensions["response_cache"].bump([GLOBAL_GENERATION])


@pytest.fixture
def admin_headers(login: Login, catalogue: Catalogue) -> Headers:
    return login(catalogue.admin)


# --- walks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sort", SORTS)
def test_a_walk_lists_what_one_numbered_page_lists_for_every_sort(
    client: FlaskClient, admin_headers: Headers, catalogue: Catalogue, sort: str
) -> None:
    expected = numbered(client, admin_headers, sort=sort)
    assert len(expected) == TASKS - len(catalogue.deleted)
    assert walk(client, admin_headers, sort=sort) == expected
    assert walk(client, admin_headers, limit=1, sort=sort) == expected


def test_the_default_sort_and_limit(client: FlaskClient, admin_headers: Headers) -> None:
    first = client.get("/tasks?limit=20", headers=admin_headers)
    assert [item["id"] for item in first.json["items"]] == numbered(client, admin_headers)[:20]
    cursor = first.json["next_cursor"]
    # `cursor` alone: the default limit (20) and the default sort, which it was issued for.
    second = client.get("/tasks", query_string={"cursor": cursor}, headers=admin_headers)
    assert [item["id"] for item in second.json["items"]] == numbered(client, admin_headers)[20:40]
    assert walk(client, admin_headers, limit=100) == numbered(client, admin_headers)


@pytest.mark.parametrize(
    "params",
    [
        {"status": "active", "sort": "-priority"},
        {"priority": "HIGH", "sort": "due_date"},
        {"assigned_user": "none", "sort": "task_name"},
        {"q": "ALPHA", "sort": "-updated_at"},
        {"due_from": "2030-06-02", "due_to": "2030-06-04", "sort": "-due_date,id"},
        {"created_from": "2030-05-01", "created_to": "2030-05-01", "sort": "created_at"},
        {"deleted": "include", "sort": "status,-created_at"},
        {"deleted": "only", "sort": "-task_name"},
    ],
)
def test_a_walk_keeps_the_filters(
    client: FlaskClient, admin_headers: Headers, params: dict[str, str]
) -> None:
    expected = numbered(client, admin_headers, **params)
    assert expected
    assert walk(client, admin_headers, limit=4, **params) == expected


def test_the_last_page_ends_the_walk_even_when_it_is_full(
    client: FlaskClient, admin_headers: Headers
) -> None:
    everything = numbered(client, admin_headers, sort="id")
    last = client.get(
        "/tasks",
        query_string={"sort": "id", "limit": len(everything)},
        headers=admin_headers,
    )
    assert [item["id"] for item in last.json["items"]] == everything
    assert last.json["next_cursor"] is None
    assert "Link" not in last.headers
    # An exact multiple of the limit: no empty page at the end.
    assert len(everything) % 6 == 0
    pages = []
    query: dict[str, Any] = {"sort": "id", "limit": 6}
    while True:
        body = client.get("/tasks", query_string=query, headers=admin_headers).json
        pages.append(body["items"])
        if body["next_cursor"] is None:
            break
        query["cursor"] = body["next_cursor"]
    assert len(pages) == len(everything) // 6 and all(pages)


def test_an_empty_list_has_one_empty_page(client: FlaskClient, login: Login, bob: Account) -> None:
    response = client.get("/tasks?limit=5", headers=login(bob))
    assert response.json == {"items": [], "next_cursor": None}
    assert "Link" not in response.headers


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "due_date", "-due_date,task_name"])
def test_a_walk_meets_every_task_that_stays_once_while_tasks_come_and_go(
    app: APIFlask,
    client: FlaskClient,
    admin_headers: Headers,
    catalogue: Catalogue,
    sort: str,
) -> None:
    before = numbered(client, admin_headers, sort=sort)
    doomed = iter([before[2], before[30], before[-1], before[10], before[45], before[20]])
    removed: set[int] = set()
    created: list[int] = []

    def churn(page: int) -> None:
        """After each page: a new task (now, due or not) and a soft-deleted one."""
        due = None if page % 2 else f"2030-06-0{page % 7 + 1}"
        new = client.post(
            "/task",
            json={"task_name": f"new {page}", "due_date": due, "priority": "HIGH"},
            headers=admin_headers,
        )
        assert new.status_code == 201
        created.append(new.json["id"])
        victim = next(doomed, None)
        if victim is not None:
            assert client.delete(f"/task/{victim}", headers=admin_headers).status_code == 204
            removed.add(victim)

    seen = walk(client, admin_headers, limit=8, between=churn, sort=sort)

    assert len(seen) == len(set(seen)), "no task twice"
    assert [task_id for task_id in seen if task_id in set(before)] == [
        task_id for task_id in before if task_id in set(seen)
    ], "in the list's order"
    stayed = {task_id for task_id in before if task_id not in removed}
    assert stayed <= set(seen), "every task that stayed, once"
    assert not set(seen) - set(before) - set(created)
    assert removed and created


# --- scope -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["-created_at", "priority,-due_date"])
def test_a_users_walk_sees_only_their_tasks(
    client: FlaskClient, login: Login, catalogue: Catalogue, sort: str
) -> None:
    headers = login(catalogue.alice)
    expected = numbered(client, headers, sort=sort)
    assert 0 < len(expected) < TASKS - len(catalogue.deleted)
    assert walk(client, headers, limit=5, sort=sort) == expected


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "task_name", "priority,-due_date"])
def test_a_users_numbered_pages_split_their_list(
    client: FlaskClient, login: Login, catalogue: Catalogue, sort: str
) -> None:
    """A user's page is read from two index ranges (assigned to them; created by them and not
    assigned to them): each page holds per_page of their tasks, and the pages are their list."""
    headers = login(catalogue.alice)
    expected = numbered(client, headers, sort=sort)
    per_page, paged = 4, []
    for page in range(1, len(expected) // per_page + 2):
        query = {"sort": sort, "per_page": per_page, "page": page}
        response = client.get("/tasks", query_string=query, headers=headers)
        assert response.status_code == 200, response.json
        items = [item["id"] for item in response.json["items"]]
        assert len(items) == min(per_page, len(expected) - per_page * (page - 1)), page
        paged += items
    assert paged == expected


def test_a_cursor_replayed_by_another_caller_shows_only_what_they_may_see(
    client: FlaskClient, login: Login, catalogue: Catalogue, moderator: Account
) -> None:
    alice, bob = login(catalogue.alice), login(catalogue.bob)
    alices_page = client.get("/tasks?sort=id&limit=3", headers=alice).json
    cursor, last_seen = alices_page["next_cursor"], alices_page["items"][-1]["id"]

    replayed = client.get("/tasks", query_string={"sort": "id", "cursor": cursor}, headers=bob)

    assert replayed.status_code == 200
    shown = [item["id"] for item in replayed.json["items"]]
    bobs = numbered(client, bob, sort="id")
    assert shown == [task_id for task_id in bobs if task_id > last_seen][:20]  # default limit
    alices_only = set(numbered(client, alice, sort="id")) - set(bobs)
    assert alices_only and not alices_only & set(shown)

    # Deleted tasks are for admins: an admin's cursor does not open them to a moderator.
    staff = first_cursor(client, login(catalogue.admin), deleted="only")
    refused = client.get(
        "/tasks", query_string={"deleted": "only", "cursor": staff}, headers=login(moderator)
    )
    assert refused.status_code == 403


def test_every_role_sees_cursor_pages(
    client: FlaskClient, login: Login, catalogue: Catalogue, make_user: Any
) -> None:
    for account in (catalogue.admin, make_user("mod_cursor", Role.MODERATOR), catalogue.alice):
        headers = login(account)
        assert walk(client, headers, limit=9) == numbered(client, headers)


# --- refused cursors -------------------------------------------------------------------------


def _resigned(
    app: APIFlask, payload: Any, *, key: str | None = None, salt: str = CURSOR_SALT
) -> str:
    serializer = URLSafeSerializer(key or app.config["SECRET_KEY"], salt=salt)
    return str(serializer.dumps(payload))


def _digest(**params: str) -> str:
    """The digest a cursor of this question carries (the question as the API reads it)."""
    return question_digest(TaskListQuery.model_validate({**params, "limit": "1"}).question())


def test_garbage_tampered_truncated_and_forged_cursors_are_refused(
    app: APIFlask, client: FlaskClient, admin_headers: Headers
) -> None:
    cursor = first_cursor(client, admin_headers, sort="id")
    question = {"sort": "id"}
    payload = {"v": 1, "q": _digest(sort="id"), "k": [1]}
    body, signature = cursor.rsplit(".", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    candidates = [
        "",
        "abc",
        "not.a.cursor",
        "%%%",
        "é",
        cursor[:-3],
        cursor[:10],
        f"{flipped}.{signature}",
        f"{body}.{signature[::-1]}",
        cursor + "x",
        _resigned(app, payload, key="another-secret-key-that-is-long-enough-000"),
        _resigned(app, payload, salt="another-salt"),
        _resigned(app, {**payload, "v": 2}),
        _resigned(app, [1, 2, 3]),
        _resigned(app, "a string"),
        _resigned(app, {"v": 1, "q": payload["q"]}),
        _resigned(app, {**payload, "k": "1"}),
        _resigned(app, {**payload, "k": [True]}),
        _resigned(app, {**payload, "k": [1.5]}),
        _resigned(app, {**payload, "k": [None]}),
        _resigned(app, {**payload, "k": ["7"]}),
        _resigned(app, {**payload, "k": [1, 2]}),
        _resigned(app, {**payload, "k": [{"dt": "2030-01-01T00:00:00+00:00"}]}),
        _resigned(app, {**payload, "k": [{"x": 1}]}),
        _resigned(app, {**payload, "k": [{"dt": "not a time"}]}),
    ]
    for candidate in candidates:
        response = client.get(
            "/tasks", query_string={**question, "cursor": candidate}, headers=admin_headers
        )
        assert_refused_cursor(response)
    # The same position, well signed: read.
    assert (
        client.get(
            "/tasks",
            query_string={**question, "cursor": _resigned(app, payload)},
            headers=admin_headers,
        ).status_code
        == 200
    )


def test_positions_of_the_wrong_type_for_the_sort_are_refused(
    app: APIFlask, client: FlaskClient, admin_headers: Headers
) -> None:
    """Well-signed positions that do not fit the sort (a cursor of another version would not):
    a 400, never a 500."""
    wrong: dict[str, list[Any]] = {
        "created_at": [{"dt": "2030-05-01T09:30:00"}, 1],  # naive
        "-created_at": [{"d": "2030-05-01"}, 1],
        "due_date": [{"dt": "2030-05-01T09:30:00+00:00"}, 1],
        "status": ["done", 1],
        "priority": ["HIGH", 1],  # a rank is compared, not a name
        "task_name": [5, 1],
        "-id": [{"dt": "2030-05-01T09:30:00+00:00"}],
        "updated_at": [None, 1],  # only due_date is ever NULL
    }
    for sort, keys in wrong.items():
        cursor = _resigned(app, {"v": 1, "q": _digest(sort=sort), "k": keys})
        response = client.get(
            "/tasks", query_string={"sort": sort, "cursor": cursor}, headers=admin_headers
        )
        assert_refused_cursor(response)
        assert "does not fit" in response.json["description"]


@pytest.mark.parametrize(
    ("issued_for", "used_with"),
    [
        ({"sort": "id"}, {"sort": "-id"}),
        ({"sort": "id"}, {}),
        ({"sort": "status,-priority"}, {"sort": "-priority,status"}),
        ({"sort": "id"}, {"sort": "id", "status": "active"}),
        ({"sort": "id", "status": "active"}, {"sort": "id", "status": "inactive"}),
        ({"priority": "HIGH"}, {"priority": "LOW"}),
        ({"assigned_user": "none"}, {"assigned_user": "1"}),
        ({"q": "alpha"}, {"q": "alph"}),
        ({"created_from": "2030-05-01"}, {"created_from": "2030-04-30"}),
        ({"due_to": "2030-06-03"}, {}),
        ({}, {"deleted": "include"}),
        ({}, {"date": "2030-05-20"}),
    ],
)
def test_a_cursor_of_another_question_is_refused(
    client: FlaskClient,
    admin_headers: Headers,
    issued_for: dict[str, str],
    used_with: dict[str, str],
) -> None:
    cursor = first_cursor(client, admin_headers, **issued_for)
    response = client.get(
        "/tasks", query_string={**used_with, "cursor": cursor}, headers=admin_headers
    )
    assert_refused_cursor(response)
    assert "another question" in response.json["description"]


def test_the_same_question_spelled_otherwise_takes_the_cursor(
    client: FlaskClient, admin_headers: Headers
) -> None:
    cursor = first_cursor(client, admin_headers, sort="status,-priority", status="ACTIVE")
    response = client.get(
        "/tasks",
        query_string={"sort": "status, -priority", "status": "active", "cursor": cursor},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.json


def test_a_cursor_signed_with_another_secret_key_is_refused(
    app: APIFlask, client: FlaskClient, catalogue: Catalogue
) -> None:
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    other_key = "another-secret-key-that-is-long-enough-0123"
    with side_app(settings_for(url, secret_key=other_key)) as other:
        other_client = other.test_client()
        token = other_client.post(
            "/login", json={"username": catalogue.admin.username, "password": TEST_PASSWORD}
        ).json["access_token"]
        foreign = first_cursor(other_client, {"Authorization": f"Bearer {token}"}, sort="id")
    headers = {"Authorization": f"Bearer {token}"}  # the JWT key is the same
    response = client.get("/tasks", query_string={"sort": "id", "cursor": foreign}, headers=headers)
    assert_refused_cursor(response)


# --- mixing and limits -----------------------------------------------------------------------


def test_numbered_and_cursor_paging_do_not_mix(client: FlaskClient, admin_headers: Headers) -> None:
    cursor = first_cursor(client, admin_headers)

    def get(**params: Any) -> TestResponse:
        return client.get("/tasks", query_string=params, headers=admin_headers)

    assert_paging_mixed(get(page=2, cursor=cursor), "cursor")
    assert_paging_mixed(get(per_page=5, cursor=cursor), "cursor")
    assert_paging_mixed(get(page=1, limit=5), "limit")
    assert_paging_mixed(get(page=2, per_page=5, limit=5, cursor=cursor), "cursor", "limit")
    assert_paging_mixed(get(page=2, cursor="garbage"), "cursor")  # 422 before the cursor is read
    # Each way alone works; no paging parameter is a numbered page, as before.
    assert set(get(page=2, per_page=5).json) == {
        "items",
        "page",
        "per_page",
        "total",
        "total_is_estimate",
        "pages",
    }
    assert set(get(limit=5).json) == {"items", "next_cursor"}
    assert set(get(cursor=cursor).json) == {"items", "next_cursor"}
    assert set(get().json) == {"items", "page", "per_page", "total", "total_is_estimate", "pages"}


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=-1", "limit=ten", f"cursor={'a' * (MAX_CURSOR_LENGTH + 1)}"],
)
def test_limit_and_cursor_length_are_validated(
    client: FlaskClient, admin_headers: Headers, query: str
) -> None:
    response = client.get(f"/tasks?{query}", headers=admin_headers)
    assert response.status_code == 422
    assert set(response.json["errors"]["query"]) == {query.split("=")[0]}


def test_the_longest_cursor_fits_the_limit_and_round_trips_its_keys(
    app: APIFlask, client: FlaskClient, login: Login, bob: Account
) -> None:
    headers = login(bob)
    longest = "\U0001f600" * 255  # four UTF-8 bytes each
    for _ in range(3):
        response = client.post(
            "/task", json={"task_name": longest, "due_date": "2030-01-02"}, headers=headers
        )
        assert response.status_code == 201
    sort = "-task_name,due_date,-updated_at,created_at,status,priority"
    cursor = first_cursor(client, headers, sort=sort, limit=1)
    assert len(cursor) < MAX_CURSOR_LENGTH
    assert len(walk(client, headers, limit=1, sort=sort)) == 3

    with app.test_request_context():
        position = (
            "naïve ☃ \U0001f600",
            date(2030, 1, 2),
            None,
            datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            TaskStatus.INACTIVE,
            3,
            2**31 - 1,
        )
        question = {"sort": [["task_name", False]]}
        values = read_cursor(issue_cursor(position, question), question)
    assert values == [*position[:4], "inactive", 3, 2**31 - 1]
    assert [type(v) for v in values[:4]] == [str, date, type(None), datetime]
    restored = keyset.keyset_position(
        (
            ("task_name", False),
            ("due_date", False),
            ("due_date", True),
            ("created_at", False),
            ("status", False),
            ("priority", False),
        ),
        values,
    )
    assert restored == position and type(restored[4]) is TaskStatus


# --- links -----------------------------------------------------------------------------------


def test_the_next_link_is_absolute_under_the_external_url(
    app: APIFlask, catalogue: Catalogue
) -> None:
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    with side_app(settings_for(url, external_url="https://api.example.com/v1/")) as behind:
        client = behind.test_client()
        token = client.post(
            "/login", json={"username": catalogue.admin.username, "password": TEST_PASSWORD}
        ).json["access_token"]
        response = client.get(
            "/tasks?sort=id&limit=2",
            headers={"Authorization": f"Bearer {token}", "Host": "evil.example"},
        )
    link = response.headers["Link"]
    assert link.startswith("<https://api.example.com/v1/tasks?sort=id&limit=2&cursor=")
    assert link.endswith('>; rel="next"') and "evil.example" not in link


def test_cursor_pages_are_cached_like_numbered_ones(
    client: FlaskClient, admin_headers: Headers
) -> None:
    cursor = first_cursor(client, admin_headers, sort="id")
    query = {"sort": "id", "cursor": cursor}
    first = client.get("/tasks", query_string=query, headers=admin_headers)
    again = client.get("/tasks", query_string=query, headers=admin_headers)
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("MISS", "HIT")
    assert again.get_data() == first.get_data() and again.headers["Link"] == first.headers["Link"]


# --- the OpenAPI document ------------------------------------------------------------------


def _resolved(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_the_document_describes_both_pages_and_the_answers_match_it(
    client: FlaskClient, admin_headers: Headers
) -> None:
    spec = client.get("/openapi.json").json
    operation = spec["paths"]["/tasks"]["get"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    shapes = [_resolved(spec, node) for node in _resolved(spec, answer)["oneOf"]]
    assert [(shape["title"], set(shape["required"])) for shape in shapes] == [
        ("TaskPage", {"items", "page", "per_page", "total", "total_is_estimate", "pages"}),
        ("TaskCursorPage", {"items", "next_cursor"}),
    ]
    next_cursor = shapes[1]["properties"]["next_cursor"]
    assert next_cursor["anyOf"] == [{"type": "string"}, {"type": "null"}]
    parameters = {p["name"]: p for p in operation["parameters"]}
    limit = parameters["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 100)
    # Described, not declared: a client sending every declared default would mix both ways.
    assert "default" not in limit and "default 20" in limit["description"]
    assert "cursor" in parameters and not parameters["cursor"]["required"]
    assert {"400", "422"} <= set(operation["responses"])

    # Every shape of answer is valid against the document, and only against its own shape.
    validator = OAS31Validator({**answer, "components": spec["components"]})
    answers = [
        client.get("/tasks", query_string=query, headers=admin_headers).json
        for query in ({}, {"page": 9}, {"limit": 3}, {"limit": 100}, {"date": DAY.isoformat()})
    ]
    for body in answers:
        validator.validate(body)
    assert not validator.is_valid({**answers[0], "next_cursor": None})  # both shapes at once


# --- the date view ---------------------------------------------------------------------------


@pytest.fixture
def logged_day(app: APIFlask, catalogue: Catalogue) -> date:
    with app.app_context():
        run = loader.run_inline(DAY, "test")
        assert run.state.value == "succeeded", run.error
    return DAY


@pytest.mark.parametrize(
    "params",
    [
        {},  # the index path, newest first
        {"sort": "created_at"},
        {"sort": "-id"},
        {"sort": "created_at,-id"},
        {"sort": "priority"},  # the join path from here on
        {"sort": "-due_date,task_name"},
        {"sort": "-updated_at"},
        {"priority": "HIGH", "sort": "id"},
        {"status": "active", "created_from": "2030-05-01"},
        {"q": "echo"},
    ],
)
def test_the_date_views_walk_lists_what_its_numbered_page_lists(
    client: FlaskClient,
    admin_headers: Headers,
    logged_day: date,
    params: dict[str, str],
) -> None:
    question = {"date": logged_day.isoformat(), **params}
    expected = numbered(client, admin_headers, **question)
    assert expected
    assert walk(client, admin_headers, limit=4, **question) == expected
    first = client.get("/tasks", query_string={**question, "limit": 2}, headers=admin_headers)
    assert all(item["log"]["log_date"] == logged_day.isoformat() for item in first.json["items"])


def test_the_date_views_walk_keeps_the_users_scope_and_its_day(
    client: FlaskClient, login: Login, catalogue: Catalogue, logged_day: date
) -> None:
    headers = login(catalogue.bob)
    question = {"date": logged_day.isoformat()}
    expected = numbered(client, headers, **question)
    assert 0 < len(expected) < len(numbered(client, login(catalogue.admin), **question))
    assert walk(client, headers, limit=3, **question) == expected

    cursor = first_cursor(client, headers, **question)
    other_day = client.get(
        "/tasks", query_string={"date": "2030-05-21", "cursor": cursor}, headers=headers
    )
    assert_refused_cursor(other_day)
    no_day = client.get("/tasks", query_string={"cursor": cursor}, headers=headers)
    assert_refused_cursor(no_day)


def test_both_ways_of_reading_a_day_walk_alike(
    client: FlaskClient,
    admin_headers: Headers,
    logged_day: date,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sorts = ["-created_at", "created_at", "id", "-id", "created_at,-id"]
    for sort in sorts:
        assert log_repo.answerable_from_log(
            TaskScope(owner_id=None), TaskFilters(sort=tuple(_terms(sort)))
        )
    fast = [
        walk(client, admin_headers, limit=5, date=logged_day.isoformat(), sort=s) for s in sorts
    ]
    monkeypatch.setattr(log_repo, "answerable_from_log", lambda scope, filters: False)
    _forget_cached_answers(client)  # answered again, not from the cache
    joined = [
        walk(client, admin_headers, limit=5, date=logged_day.isoformat(), sort=s) for s in sorts
    ]
    assert fast == joined


# --- the statements --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("date_view", "sort", "ranges"),
    [
        (False, "-created_at", 1),  # one row-value range
        (False, "status", 2),  # status after, or the same status and an older id
        (False, "due_date", 3),  # a later day, no day at all, or the same day and an older id
        (False, "-priority,task_name,id", 2),  # the last two in one direction: one range
        (True, "-created_at", 1),
        (True, "created_at,-id", 2),
        (True, "due_date", 3),
    ],
)
def test_a_cursor_page_is_one_query_with_limit_plus_one_without_offset_or_count(
    app: APIFlask,
    client: FlaskClient,
    admin_headers: Headers,
    logged_day: date,
    date_view: bool,
    sort: str,
    ranges: int,
) -> None:
    question: dict[str, Any] = {"sort": sort}
    if date_view:
        question["date"] = logged_day.isoformat()
    cursor = first_cursor(client, admin_headers, **question)
    served: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        served.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(
            "/tasks", query_string={**question, "cursor": cursor, "limit": 5}, headers=admin_headers
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200 and len(response.json["items"]) == 5

    pages = [(s, p) for s, p in served if re.search(r"FROM (task_manager|task_logger)\b", s)]
    assert len(pages) == 1, served
    [(page, parameters)] = pages
    assert "count(" not in page.lower()
    # Each range of the position's successors, and of several ranges the page: the page's size
    # and one row more.
    assert page.count("UNION ALL") == ranges - 1
    limits = _limits(page, parameters)
    assert [limit for limit, _ in limits] == [6] * (ranges + 1 if ranges > 1 else 1)
    # SQLAlchemy's SQLite dialect follows every LIMIT with OFFSET 0; nothing is skipped.
    assert {offset for _, offset in limits} <= {None, 0}


def _limits(statement: str, parameters: Any) -> list[tuple[Any, Any]]:
    """The values bound to each `LIMIT x [OFFSET y]` of a statement (`?` or `%(name)s`)."""

    def value(placeholder: str, at: int) -> Any:
        if placeholder == "?":
            return parameters[statement[:at].count("?")]
        return parameters[placeholder[2:-2]]

    found = []
    for match in re.finditer(r"LIMIT (\?|%\(\w+\)s)(?: OFFSET (\?|%\(\w+\)s))?", statement):
        offset = match.group(2) and value(match.group(2), match.start(2))
        found.append((value(match.group(1), match.start(1)), offset))
    return found


PLAN_TASKS = 5000
PLAN_SORTS = ["-created_at", "created_at", "-id", "status", "-priority", "due_date", "-due_date"]


def _plan_tasks(alice: Account) -> None:
    """PLAN_TASKS tasks in long runs of equal status, priority and due date (a fifth without
    one), some soft-deleted; the table analysed."""
    db.session.execute(
        insert(Task),
        [
            {
                "task_name": f"task {n}",
                "created_by_id": alice.id,
                "created_at": BASE + timedelta(seconds=n % 997),
                "updated_at": BASE,
                "status": (TaskStatus.ACTIVE, TaskStatus.INACTIVE)[n % 2],
                "priority": list(TaskPriority)[n % 4],
                "due_date": None if n % 5 == 0 else date(2030, 6, 1) + timedelta(days=n % 3),
                "deleted_at": BASE if n % 97 == 0 else None,
            }
            for n in range(PLAN_TASKS)
        ],
    )
    db.session.commit()
    db.session.execute(text("ANALYZE task_manager"))
    db.session.commit()


def _deep_page_plan(read_page: Callable[[Any, int], list[Any]], depth: int) -> dict[str, Any]:
    """The plan (EXPLAIN ANALYZE, sequential scans priced out) of the page of 21 rows after the
    first `depth`: `read_page(position, limit)` reads rows with their positions."""
    deep = read_page(None, depth)[-1][1]
    served: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        served.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert len(read_page(deep, 21)) == 21
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    [(statement, parameters)] = served
    connection = db.session.connection()
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    [[[explained]]] = connection.exec_driver_sql(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
    ).all()
    db.session.rollback()
    return dict(explained["Plan"])


def _assert_reads_about_a_page(plan: dict[str, Any]) -> None:
    """No sequential scan of a big table, and each scan reads a few pages' entries at most
    (per loop), never the thousands before the position."""
    scans = [n for n in _nodes(plan) if n.get("Relation Name") in ("task_manager", "task_logger")]
    assert scans and not [n for n in scans if n["Node Type"] == "Seq Scan"], json.dumps(plan)
    for scan in scans:
        read = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)
        assert read <= 100, json.dumps(plan)


@pytest.mark.parametrize("sort", PLAN_SORTS)
def test_on_postgresql_a_deep_page_reads_only_its_rows_from_the_indexes(
    app: APIFlask, backend: str, alice: Account, app_context: None, sort: str
) -> None:
    """Past 4,000 tasks, each index scan of a page reads about a page of entries (ties and the
    few deleted tasks aside), whatever the depth: the position's successors are ranges of the
    sort's indexes, each read on its own (a run of equal status or due date is not walked up to
    the position, nor are the due dates before a NULL one). Sequential scans priced out, as in
    test_query_plans: on 5,000 rows the planner would rightly read the table whole."""
    if backend != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    _plan_tasks(alice)
    filters = TaskFilters(sort=tuple(_terms(sort)))
    scope = TaskScope(owner_id=None)

    _assert_reads_about_a_page(
        _deep_page_plan(
            lambda after, limit: task_repo.tasks_after(scope, filters, after, limit), depth=4000
        )
    )


@pytest.mark.parametrize(
    ("sort", "owner"),
    [("-created_at", False), ("created_at,-id", False), ("-created_at", True), ("due_date", True)],
)
def test_on_postgresql_a_deep_page_of_a_day_reads_only_its_rows(
    app: APIFlask, backend: str, alice: Account, app_context: None, sort: str, owner: bool
) -> None:
    """The date view likewise: on task_logger's index (every owner), or on the day joined to
    its tasks (a user's)."""
    if backend != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    _plan_tasks(alice)
    assert loader.run_inline(DAY, "test").state.value == "succeeded"
    db.session.execute(text("ANALYZE task_logger"))
    db.session.commit()
    filters = TaskFilters(sort=tuple(_terms(sort)))
    scope = TaskScope(owner_id=alice.id if owner else None)
    assert log_repo.answerable_from_log(scope, filters) is not owner

    _assert_reads_about_a_page(
        _deep_page_plan(
            lambda after, limit: log_repo.log_entries_after(DAY, scope, filters, after, limit),
            depth=2000,  # of the some 2,500 active tasks logged
        )
    )


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)
