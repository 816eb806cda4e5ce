"""API8 Security Misconfiguration / injection: SQL metacharacters in every filter, sort and search
parameter of GET /tasks and GET /admin/users are data, never SQL.

Each answer is a 200 with exactly the right tasks (LIKE wildcards match themselves) or a 422; no
500; and the tables are all still there afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from urllib.parse import urlencode

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from tests.conftest import Account
from tests.security.helpers import WATCHED_TABLES, count_rows

Login = Callable[[Account], dict[str, str]]

PAYLOADS = [
    "' OR 1=1 --",
    "' OR '1'='1",
    '"; DROP TABLE task_manager; --',
    "'; DROP TABLE users; --",
    "1; SELECT pg_sleep(10)",
    "1 UNION SELECT password_hash FROM users",
    "%",
    "_",
    "\\",
    "%%",
    "\\%",
    "*",
    "ünïcødé ☃ 漢字",
    "a\x00b",
    "\x00",
    "admin'--",
    "$where: 1",
    '{"$ne": null}',
]
TASK_PARAMS = [
    "status",
    "priority",
    "assigned_user",
    "q",
    "created_from",
    "created_to",
    "due_from",
    "due_to",
    "date",
    "sort",
    "deleted",
    "page",
    "per_page",
]
NAMES = ["100% done", "snake_case", "back\\slash", "O'Reilly", "plain", "☃ snowman"]


@pytest.fixture
def admin_headers(client: FlaskClient, admin: Account, login: Login) -> dict[str, str]:
    headers = login(admin)
    for name in NAMES:
        assert client.post("/task", json={"task_name": name}, headers=headers).status_code == 201
    return headers


def _tables_intact(app: APIFlask) -> None:
    assert count_rows(app, "task_manager") == len(NAMES)
    for table in WATCHED_TABLES:
        count_rows(app, table)  # raises if the table is gone


@pytest.mark.parametrize("param", TASK_PARAMS)
def test_metacharacters_in_every_task_list_parameter_are_harmless(
    app: APIFlask, client: FlaskClient, admin_headers: dict[str, str], param: str
) -> None:
    for payload in PAYLOADS:
        response = client.get(f"/tasks?{urlencode({param: payload})}", headers=admin_headers)
        assert response.status_code in (200, 422), (payload, response.json)
        if response.status_code == 200:
            assert param == "q", (param, payload)  # every other parameter is typed
            names = [item["task_name"] for item in response.json["items"]]
            assert names == [n for n in NAMES if payload.lower() in n.lower()][::-1], payload
    _tables_intact(app)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("%", ["100% done"]),
        ("_", ["snake_case"]),
        ("\\", ["back\\slash"]),
        ("'", ["O'Reilly"]),
        ("☃", ["☃ snowman"]),
        ("' OR 1=1 --", []),
        ("%%", []),
        ("e_c", ["snake_case"]),
        ("k\\s", ["back\\slash"]),
    ],
)
def test_search_matches_metacharacters_literally(
    client: FlaskClient, admin_headers: dict[str, str], q: str, expected: list[str]
) -> None:
    response = client.get(f"/tasks?{urlencode({'q': q})}", headers=admin_headers)
    assert response.status_code == 200
    assert [item["task_name"] for item in response.json["items"]] == expected


@pytest.mark.parametrize(
    "sort", ["task_name; DROP TABLE users", "task_name desc", "(select 1)", "1", "-", "users.id"]
)
def test_sort_accepts_only_documented_fields(
    app: APIFlask, client: FlaskClient, admin_headers: dict[str, str], sort: str
) -> None:
    response = client.get(f"/tasks?{urlencode({'sort': sort})}", headers=admin_headers)
    assert response.status_code == 422
    assert "sort" in response.json["errors"]["query"]
    _tables_intact(app)


@pytest.mark.parametrize("param", ["role", "is_active", "page", "per_page"])
def test_metacharacters_in_admin_user_filters_are_refused(
    app: APIFlask, client: FlaskClient, admin_headers: dict[str, str], param: str
) -> None:
    for payload in PAYLOADS:
        response = client.get(f"/admin/users?{urlencode({param: payload})}", headers=admin_headers)
        assert response.status_code == 422, (payload, response.json)
    _tables_intact(app)


def test_metacharacters_in_stored_values_are_data(
    app: APIFlask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    for payload in PAYLOADS:
        body = {"task_name": payload.replace("\x00", "") or "x", "description": payload}
        response = client.post("/task", json=body, headers=admin_headers)
        assert response.status_code in (201, 422), (payload, response.json)
        if response.status_code == 201:
            got = client.get(f"/task/{response.json['id']}", headers=admin_headers).json
            assert got["description"] == payload
    for table in WATCHED_TABLES:
        count_rows(app, table)


@pytest.mark.parametrize(
    "name", ["' OR 1=1 --", '"; DROP TABLE task_manager; --', "a\x00b", "100%_\\"]
)
def test_metacharacters_in_an_imported_csv_are_data(
    app: APIFlask, client: FlaskClient, moderator: Account, login: Login, name: str
) -> None:
    quoted = '"' + name.replace('"', '""') + '"'
    csv = f"task_name,status,priority\n{quoted},TRUE,LOW\n".encode()
    response = client.post(
        "/upload-csv", data={"file": (BytesIO(csv), "t.csv")}, headers=login(moderator)
    )
    assert response.status_code in (200, 400, 422), response.json
    if response.status_code == 200 and response.json.get("created"):
        tasks = client.get("/tasks", headers=login(moderator)).json["items"]
        assert [t["task_name"] for t in tasks] == [name]
    for table in WATCHED_TABLES:
        count_rows(app, table)


@pytest.mark.parametrize(
    "job_id", ["a%00b", "%00", "%27%20OR%201=1--", "%25", "x" * 5000, "1;DROP%20TABLE%20jobs"]
)
def test_metacharacters_in_a_job_id_are_a_404(
    app: APIFlask, client: FlaskClient, admin_headers: dict[str, str], job_id: str
) -> None:
    response = client.get(f"/admin/jobs/{job_id}", headers=admin_headers)
    assert response.status_code == 404, response.json
    _tables_intact(app)
