"""A list's total (as a rule its ordered ids, whose number is the total) is counted once
per generation and then kept by each process as well: the other pages of the same list (looked
up under the same generation values as the total) read the process's copy without a round trip
to the cache; a write bumps the generations, and the next page counts again instead of reading a
copy that is out of date. Through the hot-path middleware and through Flask, for the task list
and the date view."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from app.cache.store import GLOBAL_GENERATION, ResponseCache
from app.services import loader
from app.services.pages import TOTALS
from app.services.task_logs import DAY_ENTRIES
from app.services.tasks import LIST_IDS
from tests.api.conftest import hot_paths_of, logged_in_and_remembered
from tests.conftest import Account

DAY = date(2031, 6, 2)


@pytest.fixture
def count_lookups(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The prefixes of the totals (and the lists' ordered ids) looked up in the cache, not in a
    process's copy."""
    cache: ResponseCache = app.extensions["response_cache"]
    cache.bump([GLOBAL_GENERATION])  # nothing an earlier test cached can match
    seen: list[str] = []
    real = cache.lookup

    def spy(prefix: str, *args: Any, **kwargs: Any) -> Any:
        if prefix.startswith((f"{TOTALS}:", f"{LIST_IDS}:", f"{DAY_ENTRIES}:")):
            seen.append(prefix)
        return real(prefix, *args, **kwargs)

    monkeypatch.setattr(cache, "lookup", spy)
    yield seen


@pytest.mark.parametrize("view", ["list", "date"])
@pytest.mark.parametrize("path", ["hot path", "flask"])
def test_later_pages_read_the_total_kept_in_the_process_until_a_write(
    app: APIFlask,
    client: FlaskClient,
    admin: Account,
    count_lookups: list[str],
    monkeypatch: pytest.MonkeyPatch,
    view: str,
    path: str,
) -> None:
    headers = logged_in_and_remembered(client, admin)
    if path == "flask":
        monkeypatch.setattr(hot_paths_of(app), "enabled", False)

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

    first = page(1)
    assert (first.status_code, first.json["total"]) == (200, 5)
    assert count_lookups, "the first page looks its total up (and counts it)"
    count_lookups.clear()
    for n in (2, 3):
        later = page(n)
        assert later.headers["X-Cache"] == "MISS"
        assert later.json["total"] == 5
    assert count_lookups == [], "later pages read the process's copy of the total"

    create()  # bumps the generations the total is kept under
    if view == "date":
        with app.app_context():
            loader.run_inline(DAY, "test")  # logs the new task too (and bumps the day)
    after = page(3)
    assert after.headers["X-Cache"] == "MISS"
    assert after.json["total"] == 6, "a copy kept before the write is not read after it"
    assert count_lookups, "counted again"
