"""A list's total is counted once per generation and kept in the cache: the other pages of the
same list read it from there; a write bumps the generations, and the next page counts again
instead of reading a total that is out of date. For the task list and the date view."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from app.cache.store import GLOBAL_GENERATION, ResponseCache
from app.repositories import task_logs as log_repo
from app.repositories import tasks as task_repo
from app.services import loader
from tests.api.conftest import logged_in_and_remembered
from tests.conftest import Account

DAY = date(2031, 6, 2)


@pytest.fixture
def counts(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The totals counted (not read from the cache) during the test."""
    cache: ResponseCache = app.extensions["response_cache"]
    cache.bump([GLOBAL_GENERATION])  # nothing an earlier test cached can match
    counted: list[str] = []
    for module, name in ((task_repo, "count_tasks"), (log_repo, "count_log_for_date")):
        real = getattr(module, name)

        def spy(*args: Any, _real: Any = real, _name: str = name) -> Any:
            counted.append(_name)
            result = _real(*args)
            return result

        monkeypatch.setattr(module, name, spy)
    yield counted


@pytest.mark.parametrize("view", ["list", "date"])
def test_later_pages_read_the_total_kept_in_the_cache_until_a_write(
    app: APIFlask, client: FlaskClient, admin: Account, counts: list[str], view: str
) -> None:
    headers = logged_in_and_remembered(client, admin)

    def create() -> None:
        response = client.post("/task", json={"task_name": "t"}, headers=headers)
        assert response.status_code == 201

    for _ in range(5):
        create()
    base = "/tasks?per_page=2" + (f"&date={DAY.isoformat()}" if view == "date" else "")

    def page(n: int) -> Any:
        return client.get(f"{base}&page={n}", headers=headers)

    if view == "date":
        with app.app_context():
            loader.run_inline(DAY, "test")

    counts.clear()
    first = page(1)
    assert (first.status_code, first.json["total"]) == (200, 5)
    assert len(counts) == 1, "the first page counts its total"
    for n in (2, 3):
        later = page(n)
        assert later.headers["X-Cache"] == "MISS"
        assert later.json["total"] == 5
    assert len(counts) == 1, "later pages read the total kept in the cache"

    create()  # bumps the generations the total is kept under
    if view == "date":
        with app.app_context():
            loader.run_inline(DAY, "test")  # logs the new task too (and bumps the day)
    after = page(3)
    assert after.headers["X-Cache"] == "MISS"
    assert after.json["total"] == 6, "a total kept before the write is not read after it"
    assert len(counts) == 2, "counted again"
