"""A page's `total` never costs a count of the whole list: counted exactly up to
COUNT_EXACT_UP_TO matching rows (the count reads at most one row more), and above that the
database's estimate, flagged `total_is_estimate` (PostgreSQL; SQLite, the embedded setup,
counts exactly). Cursor pages carry no total at all."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from apiflask import APIFlask
from sqlalchemy import event, text

from app.extensions import db
from app.repositories.counts import ESTIMATE_ONLY_ABOVE
from tests.conftest import TEST_PASSWORD, Account, add_tasks, side_app
from tests.conftest import test_settings as settings_for

CAP = 5


@pytest.fixture
def capped_app(app: APIFlask) -> Iterator[APIFlask]:
    """An app on the `app` fixture's database counting exactly up to CAP rows, cache off (every
    total is counted)."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    with side_app(settings_for(url, count_exact_up_to=CAP, cache_enabled=False)) as capped:
        yield capped


def add_analyzed_tasks(app: APIFlask, owner: Account, count: int) -> None:
    """Tasks, and on PostgreSQL fresh statistics for the planner's estimate."""
    add_tasks(app, owner, count)
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("ANALYZE task_manager"))
            db.session.commit()


def headers_for(app: APIFlask, account: Account) -> dict[str, str]:
    response = app.test_client().post(
        "/login", json={"username": account.username, "password": TEST_PASSWORD}
    )
    return {"Authorization": f"Bearer {response.json['access_token']}"}


@contextlib.contextmanager
def statements(app: APIFlask) -> Iterator[list[tuple[str, Any]]]:
    """The SQL the app sends meanwhile, each with its parameters."""
    seen: list[tuple[str, Any]] = []
    with app.app_context():
        engine = db.engine

    def record(*args: Any) -> None:
        seen.append((args[2], args[3]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("count", [0, 3, CAP])
def test_up_to_the_bound_the_total_is_exact(
    capped_app: APIFlask, moderator: Account, count: int
) -> None:
    add_analyzed_tasks(capped_app, moderator, count)
    body = capped_app.test_client().get("/tasks", headers=headers_for(capped_app, moderator)).json
    assert (body["total"], body["total_is_estimate"]) == (count, False)


@pytest.mark.parametrize("count", [12, 40])
def test_above_the_bound_postgresql_estimates_and_says_so(
    capped_app: APIFlask, moderator: Account, backend: str, count: int
) -> None:
    add_analyzed_tasks(capped_app, moderator, count)
    headers = headers_for(capped_app, moderator)
    with statements(capped_app) as seen:
        body = capped_app.test_client().get("/tasks?per_page=10", headers=headers).json
    assert len(body["items"]) == 10
    counts = [(sql, p) for sql, p in seen if "count(*)" in sql]
    if backend == "sqlite":
        assert (body["total"], body["total_is_estimate"]) == (count, False)
        return
    assert body["total_is_estimate"] is True
    # The planner's figure, from the statistics ANALYZE gathered: right on this table.
    assert body["total"] == count and body["pages"] == -(-count // 10)
    on_tasks = [sql for sql, _ in seen if "task_manager" in sql]
    assert on_tasks[0].startswith("EXPLAIN (FORMAT JSON)")  # asked before anything is counted
    if count > ESTIMATE_ONLY_ABOVE * CAP:
        assert not counts, "far above the bound, nothing is counted"
    else:
        # Near the bound: counted, reading at most one row past it, before the estimate decides.
        sql, params = counts[0]
        values = params.values() if isinstance(params, dict) else params
        assert "LIMIT" in sql and CAP + 1 in values


def test_cursor_pages_count_nothing(capped_app: APIFlask, moderator: Account) -> None:
    add_analyzed_tasks(capped_app, moderator, 12)
    with statements(capped_app) as seen:
        body = (
            capped_app.test_client()
            .get("/tasks?limit=5", headers=headers_for(capped_app, moderator))
            .json
        )
    assert "total" not in body and len(body["items"]) == 5
    assert not [sql for sql, _ in seen if "count(" in sql.lower() or sql.startswith("EXPLAIN")]
