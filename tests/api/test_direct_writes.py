"""`PUT /task/<id>` answered in front of Flask (app.api.direct_writes, through
app.api.hot_paths) for a caller the process remembers: the very answer and the same audit
trail as through Flask; every other answer (400, 401, 403, 404, 409, 412, 415, 422) is Flask's,
and a refused write leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import Client

from tests.api.conftest import hot_paths_of, logged_in_and_remembered
from tests.api.test_observability import LogLines, log_lines, scrape, value  # noqa: F401
from tests.conftest import Account

Headers = dict[str, str]
Login = Callable[[Account], Headers]


def remembered(client: FlaskClient, login: Login, account: Account) -> Headers:
    headers = login(account)
    assert client.get("/tasks", headers=headers).status_code == 200  # the session is remembered
    return headers


def new_task(client: FlaskClient, headers: Headers, **fields: Any) -> int:
    response = client.post("/task", json={"task_name": "t", **fields}, headers=headers)
    assert response.status_code == 201, response.json
    task_id: int = response.json["id"]
    return task_id


def history(client: FlaskClient, headers: Headers, task_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/task/{task_id}/history", headers=headers)
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json["items"]
    return [{k: v for k, v in item.items() if k not in ("id", "created_at")} for item in items]


def test_an_update_is_answered_before_flask_exactly_as_flask_answers_it(
    app: APIFlask,
    client: FlaskClient,
    alice: Account,
    login: Login,
    flask_dispatches: list[str],
) -> None:
    headers = {**remembered(client, login, alice), "X-Request-ID": "direct-write"}
    direct_id, flask_id = new_task(client, headers), new_task(client, headers)
    body = {"priority": "high", "description": "Ünïcode ✓", "due_date": "2031-01-02"}
    flask_dispatches.clear()

    direct = client.put(f"/task/{direct_id}", json=body, headers=headers)
    assert flask_dispatches == []
    through_flask = Client(hot_paths_of(app).next_app).put(
        f"/task/{flask_id}", json=body, headers=headers
    )

    assert direct.status_code == through_flask.status_code == 200
    assert {**direct.json, "id": 0, "updated_at": 0, "created_at": 0} == {
        **through_flask.json,
        "id": 0,
        "updated_at": 0,
        "created_at": 0,
    }
    assert direct.json["priority"] == "HIGH" and direct.headers["ETag"] == f'"task-{direct_id}-v2"'
    assert set(direct.headers.keys()) == set(through_flask.headers.keys())
    for name in set(through_flask.headers.keys()) - {"ETag", "Content-Length"}:
        assert direct.headers[name] == through_flask.headers[name], name
    assert history(client, headers, direct_id) == [
        {**entry, "task_id": direct_id} for entry in history(client, headers, flask_id)
    ]
    # What was written is what is read back (and the cached answer was made stale).
    assert client.get(f"/task/{direct_id}", headers=headers).json == direct.json


def test_an_update_with_a_current_if_match_is_direct_and_a_stale_one_is_flasks_412(
    client: FlaskClient, alice: Account, login: Login, flask_dispatches: list[str]
) -> None:
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)
    etag = client.get(f"/task/{task_id}", headers=headers).headers["ETag"]
    flask_dispatches.clear()

    first = client.put(
        f"/task/{task_id}", json={"status": "inactive"}, headers={**headers, "If-Match": etag}
    )
    assert first.status_code == 200 and flask_dispatches == []
    stale = client.put(
        f"/task/{task_id}", json={"status": "active"}, headers={**headers, "If-Match": etag}
    )

    assert stale.status_code == 412 and flask_dispatches == [f"/task/{task_id}"]
    assert client.get(f"/task/{task_id}", headers=headers).json["status"] == "inactive"
    assert [e["action"] for e in history(client, headers, task_id)] == ["updated", "created"]


@pytest.mark.parametrize(
    ("request_args", "status"),
    [
        ({"json": {"priority": "urgent"}}, 422),  # the input model refuses it
        ({"json": {"owner": 3}}, 422),  # an unknown field
        ({"json": {"task_name": None}}, 422),
        ({"json": [1, 2]}, 422),
        ({"data": b"{not json", "content_type": "application/json"}, 400),
        ({"data": b"priority=HIGH", "content_type": "application/x-www-form-urlencoded"}, 415),
    ],
    ids=["bad-value", "unknown-field", "null-name", "not-an-object", "bad-json", "form"],
)
def test_a_body_the_view_refuses_is_answered_by_flask_and_writes_nothing(
    client: FlaskClient,
    alice: Account,
    login: Login,
    flask_dispatches: list[str],
    request_args: dict[str, Any],
    status: int,
) -> None:
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)
    flask_dispatches.clear()

    response = client.put(f"/task/{task_id}", headers=headers, **request_args)

    assert response.status_code == status, response.json
    assert response.json["code"] == status
    assert flask_dispatches == [f"/task/{task_id}"]
    assert [e["action"] for e in history(client, headers, task_id)] == ["created"]


def test_what_the_service_refuses_is_answered_by_flask(
    client: FlaskClient,
    admin: Account,
    alice: Account,
    bob: Account,
    login: Login,
    flask_dispatches: list[str],
) -> None:
    alices = remembered(client, login, alice)
    admins = remembered(client, login, admin)
    bobs_task = new_task(client, admins, assigned_user_id=bob.id)
    alices_task = new_task(client, alices)
    deleted = new_task(client, admins)
    assert client.delete(f"/task/{deleted}", headers=admins).status_code == 204
    flask_dispatches.clear()

    answers = [
        client.put(f"/task/{bobs_task}", json={"priority": "LOW"}, headers=alices),  # hidden
        client.put(f"/task/{alices_task}", json={"assigned_user_id": bob.id}, headers=alices),
        client.put(f"/task/{deleted}", json={"priority": "LOW"}, headers=admins),
        client.put(f"/task/{alices_task}", json={"assigned_user_id": 999_999}, headers=admins),
    ]

    assert [a.status_code for a in answers] == [404, 403, 409, 422]
    assert len(flask_dispatches) == 4
    assert [e["action"] for e in history(client, alices, alices_task)] == ["created"]


def test_a_session_ended_elsewhere_is_not_taken_for_a_write(
    client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = remembered(client, login, alice)
    task_id = new_task(client, headers)
    assert client.post("/logout", headers=headers).status_code in (200, 204)

    response = client.put(f"/task/{task_id}", json={"priority": "LOW"}, headers=headers)

    assert response.status_code == 401


def test_a_direct_write_is_logged_and_counted(
    app: APIFlask,
    alice: Account,
    log_lines: LogLines,  # noqa: F811
) -> None:
    client = app.test_client()
    headers = logged_in_and_remembered(client, alice)
    task_id = new_task(client, headers)
    path = "/task/<int:task_id>"
    before = value(scrape(client), "http_requests_total", method="PUT", endpoint=path, status="200")

    put = client.put(
        f"/task/{task_id}", json={"priority": "LOW"}, headers={**headers, "X-Request-ID": "dw"}
    )

    assert put.status_code == 200
    after = value(scrape(client), "http_requests_total", method="PUT", endpoint=path, status="200")
    assert after == before + 1
    [line] = [x for x in log_lines() if x.get("request_id") == "dw"]
    assert (line["method"], line["path"], line["status"]) == ("PUT", f"/task/{task_id}", 200)
    assert line["user_id"] == alice.id
