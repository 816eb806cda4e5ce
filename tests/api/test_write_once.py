"""A write is decided and committed once, and its preconditions are werkzeug's `If-Match`
handling (a star included): nothing runs the service again after its commit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from app.api import tasks as task_api
from tests.conftest import Account

Headers = dict[str, str]


def _new_task(client: FlaskClient, headers: Headers) -> int:
    response = client.post("/task", json={"task_name": "write once"}, headers=headers)
    assert response.status_code == 201, response.json
    task_id: int = response.json["id"]
    return task_id


def _actions(client: FlaskClient, headers: Headers, task_id: int) -> list[str]:
    response = client.get(f"/task/{task_id}/history", headers=headers)
    assert response.status_code == 200, response.json
    return [entry["action"] for entry in response.json["items"]]


def test_an_error_after_a_puts_commit_leaves_exactly_one_audit_entry(
    client: FlaskClient,
    alice: Account,
    login: Callable[[Account], Headers],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = login(alice)
    task_id = _new_task(client, headers)

    def fails(_tag: str) -> str:
        raise RuntimeError("the answer could not be built")

    monkeypatch.setattr(task_api, "quote_etag", fails)  # runs after update_task has committed
    response = client.put(f"/task/{task_id}", json={"priority": "HIGH"}, headers=headers)
    monkeypatch.undo()

    assert response.status_code == 500 and response.json["code"] == 500
    assert _actions(client, headers, task_id) == ["updated", "created"]
    task = client.get(f"/task/{task_id}", headers=headers)
    assert task.json["priority"] == "HIGH"
    assert task.headers["ETag"] == f'"task-{task_id}-v2"', "written once: one version on"


@pytest.mark.parametrize(
    ("if_match", "status", "actions"),
    [
        ("*", 200, ["updated", "created"]),
        ('"task-{id}-v1"', 200, ["updated", "created"]),
        ('"task-{id}-v0", "task-{id}-v1"', 200, ["updated", "created"]),
        ('"task-{id}-v9"', 412, ["created"]),
        ('W/"task-{id}-v1"', 412, ["created"]),  # If-Match compares strongly
    ],
)
def test_if_match_is_werkzeugs_star_and_list_included(
    client: FlaskClient,
    alice: Account,
    login: Callable[[Account], Headers],
    if_match: str,
    status: int,
    actions: list[str],
) -> None:
    headers = login(alice)
    task_id = _new_task(client, headers)

    response = client.put(
        f"/task/{task_id}",
        json={"status": "inactive"},
        headers={**headers, "If-Match": if_match.replace("{id}", str(task_id))},
    )

    assert response.status_code == status, response.json
    assert _actions(client, headers, task_id) == actions


@pytest.mark.parametrize("if_none_match", ["*", '"task-{id}-v1"', 'W/"other", "{etag}"'])
def test_if_none_match_answers_304_with_werkzeugs_rules(
    client: FlaskClient, alice: Account, login: Callable[[Account], Headers], if_none_match: str
) -> None:
    headers = login(alice)
    task_id = _new_task(client, headers)
    first = client.get(f"/task/{task_id}", headers=headers)
    etag = first.headers["ETag"]
    sent = if_none_match.replace("{id}", str(task_id)).replace('"{etag}"', etag)

    for _ in ("miss or hit", "hit"):
        response = client.get(f"/task/{task_id}", headers={**headers, "If-None-Match": sent})
        if sent != "*" and etag not in sent:
            assert response.status_code == 200
            continue
        assert response.status_code == 304, response.data
        assert response.data == b""
        assert response.headers["ETag"] == etag
        assert response.headers["X-Request-ID"], "the after-request hooks ran on it"


def test_a_stale_if_none_match_gets_the_whole_answer(
    client: FlaskClient, alice: Account, login: Callable[[Account], Headers]
) -> None:
    headers = login(alice)
    task_id = _new_task(client, headers)
    etag = client.get(f"/task/{task_id}", headers=headers).headers["ETag"]
    assert (
        client.put(f"/task/{task_id}", json={"description": "x"}, headers=headers).status_code
        == 200
    )

    response = client.get(f"/task/{task_id}", headers={**headers, "If-None-Match": etag})

    assert response.status_code == 200 and response.json["description"] == "x"
    assert response.headers["ETag"] != etag
