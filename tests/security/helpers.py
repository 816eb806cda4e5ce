"""Shared helpers of the security tests: database snapshots, logged-in headers, and races."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from apiflask import APIFlask
from sqlalchemy import text

from app.extensions import db

# Tables an attack could change (sessions and last_login_at change on every login, so they are
# left out: snapshots are taken after the logins).
WATCHED_TABLES = ("users", "task_manager", "task_audit", "task_logger", "jobs")


def snapshot(app: APIFlask, tables: tuple[str, ...] = WATCHED_TABLES) -> dict[str, list[Any]]:
    """Every row of the watched tables, in a comparable form."""
    rows: dict[str, list[Any]] = {}
    with app.app_context():
        db.session.remove()
        with db.engine.connect() as conn:
            for table in tables:
                result = conn.execute(text(f"SELECT * FROM {table}"))
                rows[table] = sorted((tuple(map(str, row)) for row in result), key=repr)
    return rows


def count_rows(app: APIFlask, table: str) -> int:
    with app.app_context(), db.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def race(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run each job in a thread of its own, all released at once; their results, in order."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int, job: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = job()
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return results
