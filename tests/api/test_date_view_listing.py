"""The date view's total, where the log alone answers it, is guarded by the day's and the
deletions' counters only. An edit of a task (PUT) changes the task's fields on the page at once,
without counting the day again; a soft delete, a restore and a purge change which tasks the day
lists, and the next page says so. On both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from app.cache.store import GLOBAL_GENERATION, ResponseCache
from app.repositories import task_logs as log_repo
from app.services import loader
from tests.api.conftest import logged_in_and_remembered
from tests.conftest import Account

DAY = date(2031, 7, 9)


@pytest.fixture
def listing_computations(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The days counted (a total computed, not read from the cache) during the test."""
    cache: ResponseCache = app.extensions["response_cache"]
    cache.bump([GLOBAL_GENERATION])  # nothing an earlier test cached can match
    counted: list[str] = []
    real = log_repo.count_log_for_date

    def spy(log_date: date, *args: Any) -> Any:
        counted.append(log_date.isoformat())
        return real(log_date, *args)

    monkeypatch.setattr(log_repo, "count_log_for_date", spy)
    yield counted


@pytest.fixture
def headers(client: FlaskClient, admin: Account) -> dict[str, str]:
    return logged_in_and_remembered(client, admin)


def test_an_edit_shows_at_once_and_only_a_deletion_counts_the_day_again(
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
    assert len(listing_computations) == 1, "an edit does not count the day again"

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
