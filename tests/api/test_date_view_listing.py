"""What the date view remembers of a day (its ordered task ids: which tasks it lists, in which
order) is guarded by the day's and the deletions' counters only. An edit of a task (PUT) changes
the task's fields on the page at once, without costing the day's ids again; a soft delete, a
restore and a purge change which tasks the day lists, and the next page says so. Through the
hot-path middleware and through Flask, on both backends (PUT on PostgreSQL writes outside the
session, app.repositories.tasks.write_task_row_at_once; on SQLite in it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from app.cache.store import GLOBAL_GENERATION, ResponseCache
from app.services import loader
from app.services.task_logs import DAY_ENTRIES
from tests.api.conftest import hot_paths_of, logged_in_and_remembered
from tests.conftest import Account

DAY = date(2031, 7, 9)


@pytest.fixture
def listing_computations(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The prefixes of the day's ordered ids computed (stored in the cache) during the test."""
    cache: ResponseCache = app.extensions["response_cache"]
    cache.bump([GLOBAL_GENERATION])  # nothing an earlier test cached can match
    stored: list[str] = []
    real = cache.set

    def spy(key: str, value: bytes) -> None:
        if key.startswith(f"resp:{DAY_ENTRIES}:"):
            stored.append(key)
        real(key, value)

    monkeypatch.setattr(cache, "set", spy)
    yield stored


@pytest.fixture(params=["hot path", "flask"])
def headers(
    request: pytest.FixtureRequest,
    app: APIFlask,
    client: FlaskClient,
    admin: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The admin's Authorization header; their requests answered by the hot-path middleware
    (the process remembers the session) or, with it turned off, by Flask."""
    headers = logged_in_and_remembered(client, admin)
    if request.param == "flask":
        monkeypatch.setattr(hot_paths_of(app), "enabled", False)
    return headers


def test_an_edit_shows_at_once_and_only_a_deletion_costs_the_days_ids_again(
    app: APIFlask, client: FlaskClient, headers: dict[str, str], listing_computations: list[str]
) -> None:
    created = [client.post("/task", json={"task_name": f"t{n}"}, headers=headers) for n in range(4)]
    assert all(response.status_code == 201 for response in created)
    ids = [response.json["id"] for response in created]
    with app.app_context():
        loader.run_inline(DAY, "test")

    def listed() -> tuple[int, list[tuple[int, str]]]:
        response = client.get(f"/tasks?date={DAY.isoformat()}&per_page=50", headers=headers)
        assert response.status_code == 200 and response.headers["X-Cache"] == "MISS"
        items = response.json["items"]
        return response.json["total"], [(item["id"], item["priority"]) for item in items]

    newest_first = ids[::-1]
    assert listed() == (4, [(i, "MEDIUM") for i in newest_first])
    assert len(listing_computations) == 1

    edited = client.put(f"/task/{ids[1]}", json={"priority": "HIGH"}, headers=headers)
    assert edited.status_code == 200
    expected = [(i, "HIGH" if i == ids[1] else "MEDIUM") for i in newest_first]
    assert listed() == (4, expected), "the page shows the edit"
    assert len(listing_computations) == 1, "an edit does not cost the day's ids again"

    assert client.delete(f"/task/{ids[2]}", headers=headers).status_code == 204
    assert listed() == (3, [pair for pair in expected if pair[0] != ids[2]])
    assert len(listing_computations) == 2

    assert client.post(f"/task/{ids[2]}/restore", headers=headers).status_code == 200
    assert listed() == (4, expected)
    assert len(listing_computations) == 3

    deleted_only = client.get(f"/tasks?date={DAY.isoformat()}&deleted=only", headers=headers).json
    assert deleted_only["total"] == 0
    assert client.delete(f"/task/{ids[0]}", headers=headers).status_code == 204
    only = client.get(f"/tasks?date={DAY.isoformat()}&deleted=only", headers=headers).json
    assert (only["total"], [item["id"] for item in only["items"]]) == (1, [ids[0]])


def test_a_purge_drops_the_task_from_the_days_listing(
    app: APIFlask, client: FlaskClient, headers: dict[str, str], listing_computations: list[str]
) -> None:
    ids = [
        client.post("/task", json={"task_name": f"p{n}"}, headers=headers).json["id"]
        for n in range(3)
    ]
    with app.app_context():
        loader.run_inline(DAY, "test")

    def page() -> Any:
        return client.get(f"/tasks?date={DAY.isoformat()}", headers=headers).json

    assert [item["id"] for item in page()["items"]] == ids[::-1]
    purge = client.delete(f"/admin/tasks/{ids[1]}", headers=headers)
    assert purge.status_code == 204, purge.json
    after = page()
    assert (after["total"], [item["id"] for item in after["items"]]) == (2, [ids[2], ids[0]])
    assert len(listing_computations) == 2
