"""The date view's two ways of reading a day (app/repositories/task_logs.py): a page found on
task_logger's (log_date, task_created_at, task_id) index when the question allows it, else the
day joined to its tasks. Both must list exactly the same entries in the same order, with the same
total, on both backends; on PostgreSQL the index path must walk the index instead of sorting the
day."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import event, insert, select, text

from app.cache.store import GLOBAL_GENERATION
from app.extensions import db
from app.models import Role, Task, TaskPriority, TaskStatus
from app.models.types import utcnow
from app.repositories import task_logs as log_repo
from app.repositories.tasks import TaskFilters, TaskScope
from app.services import loader
from tests.conftest import Account

DAYS = [date(2030, 3, 12), date(2030, 3, 13), date(2030, 3, 14)]
UNLOGGED_DAY = date(2030, 3, 15)
# Task creation instants: several tasks share each of the first three (ties broken by id),
# spread over three calendar days so created_from / created_to cut between them.
T0 = datetime(2030, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
T1 = datetime(2030, 3, 2, 0, 0, tzinfo=UTC)
T2 = datetime(2030, 3, 2, 12, 30, tzinfo=UTC)
T3 = datetime(2030, 3, 3, 8, 0, tzinfo=UTC)

SORTS: list[tuple[tuple[str, bool], ...]] = [
    (("created_at", True),),  # the default
    (("created_at", False),),
    (("id", True),),
    (("id", False),),
    (("created_at", False), ("id", True)),
    (("created_at", True), ("id", False)),
]
SCOPES = {
    "live": TaskScope(owner_id=None),
    "with_deleted": TaskScope(owner_id=None, include_deleted=True),
}


@dataclass(frozen=True)
class Day:
    """The accounts and what happened to the tasks while the days were logged."""

    alice: Account
    bob: Account
    deleted: set[int]  # soft-deleted now, logged on some of the days before
    created: dict[int, datetime]


def _add_tasks(app: APIFlask, creator: Account, specs: list[dict[str, Any]]) -> list[int]:
    now = utcnow()
    with app.app_context():
        ids = []
        for spec in specs:
            task = Task(created_by_id=creator.id, updated_at=now, **spec)
            db.session.add(task)
            db.session.flush()
            ids.append(task.id)
        db.session.commit()
        return ids


def _log(app: APIFlask, day: date) -> None:
    with app.app_context():
        run = loader.run_inline(day, "test")
        assert run.state.value == "succeeded", run.error


def _soft_delete(app: APIFlask, task_ids: list[int]) -> None:
    with app.app_context():
        for task_id in task_ids:
            task = db.session.get(Task, task_id)
            assert task is not None
            task.deleted_at = utcnow()
        db.session.commit()


@pytest.fixture
def days(app: APIFlask, admin: Account, alice: Account, bob: Account) -> Day:
    """Three logged days: tasks come and go between them, some are soft-deleted after being
    logged, several share a creation instant."""
    priorities = list(TaskPriority)
    first = _add_tasks(
        app,
        alice,
        [
            {
                "task_name": f"alice {n}",
                "created_at": (T0, T1, T2)[n % 3],
                "priority": priorities[n % 4],
                "assigned_user_id": (None, alice.id, bob.id)[n % 3],
            }
            for n in range(9)
        ],
    )
    first += _add_tasks(
        app,
        bob,
        [
            {"task_name": f"bob {n}", "created_at": (T1, T3)[n % 2], "assigned_user_id": bob.id}
            for n in range(5)
        ]
        + [{"task_name": "parked", "created_at": T1, "status": TaskStatus.INACTIVE}],
    )
    _log(app, DAYS[0])
    _soft_delete(app, first[1:3])  # ties of T1 and T2
    later = _add_tasks(
        app,
        admin,
        [{"task_name": "late", "created_at": T2}, {"task_name": "last", "created_at": T3}],
    )
    _log(app, DAYS[1])
    _soft_delete(app, [first[9], later[0]])
    _log(app, DAYS[2])
    with app.app_context():
        created = {t.id: t.created_at for t in db.session.scalars(select(Task))}
    return Day(alice, bob, {*first[1:3], first[9], later[0]}, created)


def _general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_repo, "answerable_from_log", lambda scope, filters: False)


def _listing(day: date, scope: TaskScope, filters: TaskFilters) -> tuple[int, list[int]]:
    """The total and every listed task id in order, read in windows of 3 (offsets at work) as
    the service reads them."""
    total = log_repo.count_log_for_date(day, scope, filters, exact_up_to=10_000).value
    listed: list[int] = []
    for offset in range(0, total + 3, 3):
        entries = log_repo.log_entries_for_date(day, scope, filters, offset, 3)
        assert all(e.log_date == day and e.task.id == e.task_id for e in entries)
        listed += [e.task_id for e in entries]
    assert len(listed) == total
    return total, listed


def _cases(alice_id: int) -> Iterator[tuple[str, TaskScope, TaskFilters]]:
    for scope_name, scope in SCOPES.items():
        for sort in SORTS:
            yield scope_name, scope, TaskFilters(sort=sort)
        yield scope_name, scope, TaskFilters(created_from=date(2030, 3, 2))
        yield scope_name, scope, TaskFilters(created_to=date(2030, 3, 2), sort=(("id", False),))
        yield (
            scope_name,
            scope,
            TaskFilters(created_from=date(2030, 3, 2), created_to=date(2030, 3, 2)),
        )
        yield scope_name, scope, TaskFilters(priority=TaskPriority.HIGH)
        yield scope_name, scope, TaskFilters(unassigned=True, sort=(("created_at", False),))
        yield scope_name, scope, TaskFilters(assigned_user_id=alice_id, status=TaskStatus.ACTIVE)
    for sort in SORTS[:2]:  # deleted=only, admins only
        yield "with_deleted", SCOPES["with_deleted"], TaskFilters(deleted_only=True, sort=sort)


def test_the_index_path_and_the_join_path_list_the_same_entries(
    app: APIFlask, days: Day, app_context: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = list(_cases(days.alice.id))
    fast = {}
    for n, (_, scope, filters) in enumerate(cases):
        assert log_repo.answerable_from_log(scope, filters), filters
        for day in [*DAYS, UNLOGGED_DAY]:
            fast[n, day] = _listing(day, scope, filters)
    _general_path(monkeypatch)

    for n, (scope_name, scope, filters) in enumerate(cases):
        for day in [*DAYS, UNLOGGED_DAY]:
            assert fast[n, day] == _listing(day, scope, filters), (scope_name, filters, day)

    # The data set covers what the paths could disagree on.
    everything = fast[0, DAYS[0]][1]
    assert len({days.created[i] for i in everything}) < len(everything)  # ties
    with_deleted = fast[
        cases.index(("with_deleted", SCOPES["with_deleted"], TaskFilters())), DAYS[1]
    ]
    assert days.deleted & set(with_deleted[1])
    assert not days.deleted & set(fast[0, DAYS[1]][1])
    assert fast[0, UNLOGGED_DAY] == (0, [])


def test_the_default_order_is_the_task_lists_newest_first_ties_by_id(
    app: APIFlask, days: Day, app_context: None
) -> None:
    total, listed = _listing(DAYS[0], SCOPES["with_deleted"], TaskFilters())

    expected = sorted(listed, key=lambda i: (days.created[i], i), reverse=True)
    assert listed == expected
    assert total == 14  # every active task of the first day, the deleted ones included


def test_a_users_date_view_takes_the_join_path_and_lists_their_part_of_the_admins(
    app: APIFlask, days: Day, app_context: None
) -> None:
    for account in (days.alice, days.bob):
        scope = TaskScope(owner_id=account.id)
        with_deleted = TaskScope(owner_id=account.id, include_deleted=True)
        for filters in (TaskFilters(), TaskFilters(sort=(("created_at", False),))):
            assert not log_repo.answerable_from_log(scope, filters)
            assert not log_repo.answerable_from_log(with_deleted, filters)
            for day in DAYS:
                total, listed = _listing(day, scope, filters)
                _, everyone = _listing(day, SCOPES["live"], filters)
                tasks = {
                    t.id: t for t in db.session.scalars(select(Task).where(Task.id.in_(everyone)))
                }
                mine = [
                    i
                    for i in everyone
                    if account.id in (tasks[i].created_by_id, tasks[i].assigned_user_id)
                ]
                assert listed == mine and total == len(mine) > 0


@pytest.mark.parametrize(
    ("scope", "filters"),
    [
        (TaskScope(owner_id=7), TaskFilters()),
        (TaskScope(owner_id=None), TaskFilters(q="alice")),
        (TaskScope(owner_id=None), TaskFilters(due_from=date(2030, 1, 1))),
        (TaskScope(owner_id=None), TaskFilters(due_to=date(2030, 1, 1))),
        (TaskScope(owner_id=None), TaskFilters(sort=(("priority", True),))),
        (TaskScope(owner_id=None), TaskFilters(sort=(("created_at", True), ("task_name", False)))),
    ],
)
def test_questions_about_the_task_itself_take_the_join_path(
    scope: TaskScope, filters: TaskFilters
) -> None:
    assert not log_repo.answerable_from_log(scope, filters)


@pytest.mark.parametrize("path", ["index", "join"])
def test_a_page_and_its_tasks_are_read_in_one_query(
    app: APIFlask, days: Day, app_context: None, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "join":
        _general_path(monkeypatch)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        entries = log_repo.log_entries_for_date(DAYS[0], SCOPES["live"], TaskFilters(), 2, 5)
        names = [e.task.task_name for e in entries]
    finally:
        event.remove(db.engine, "before_cursor_execute", record)

    assert len(names) == 5
    assert len(statements) == 1, statements


def test_the_date_view_pages_match_through_the_api(
    app: APIFlask,
    client: FlaskClient,
    days: Day,
    make_user: Any,
    login: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = login(make_user("paging_admin", Role.ADMIN))

    def pages(**params: Any) -> list[tuple[bytes, str]]:
        """Every page's whole answer (items with their snapshots, total, pages) and Link."""
        found = []
        for page in (1, 2, 3, 4, 5):
            response = client.get(
                "/tasks",
                query_string={"date": DAYS[1].isoformat(), "per_page": 4, "page": page, **params},
                headers=headers,
            )
            assert response.status_code == 200, response.json
            found.append((response.get_data(), response.headers.get("Link", "")))
        return found

    queries = [
        {},
        {"sort": "created_at"},
        {"deleted": "include"},
        {"deleted": "only"},
        {"priority": "HIGH", "sort": "-id"},
        {"status": "active", "created_from": "2030-03-02"},
    ]
    fast = [pages(**q) for q in queries]
    _general_path(monkeypatch)
    app.extensions["response_cache"].bump([GLOBAL_GENERATION])  # answer again, not from cache
    general = [pages(**q) for q in queries]
    assert fast == general
    totals = [json.loads(pages_of_query[0][0])["total"] for pages_of_query in fast]
    assert totals[0] == 12 and totals[2] == 14 and totals[3] == 2
    assert any(json.loads(body)["items"] for body, _ in fast[4])  # the filters match something


# --- on PostgreSQL: the plan -----------------------------------------------------------------

PLAN_TASKS = 5000


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _big_day(alice: Account) -> None:
    """PLAN_TASKS tasks logged on DAYS[0], many sharing a creation instant, some soft-deleted
    since; the tables analysed."""
    base = datetime(2030, 1, 1, tzinfo=UTC)
    db.session.execute(
        insert(Task),
        [
            {
                "task_name": f"task {n}",
                "created_by_id": alice.id,
                "created_at": base + timedelta(minutes=n % 997),
                "updated_at": base,
            }
            for n in range(PLAN_TASKS)
        ],
    )
    db.session.commit()
    run = loader.run_inline(DAYS[0], "test")
    assert run.rows_logged == PLAN_TASKS
    some = db.session.scalars(select(Task).limit(40)).all()
    for task in some[::4]:
        task.deleted_at = utcnow()
    db.session.commit()
    db.session.execute(text("ANALYZE task_logger"))
    db.session.execute(text("ANALYZE task_manager"))
    db.session.commit()


def test_a_page_of_a_big_day_walks_the_index_instead_of_sorting_the_day(
    app: APIFlask,
    backend: str,
    alice: Account,
    app_context: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    _big_day(alice)

    # The statement the service runs, with the values it binds.
    served: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        served.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        entries = log_repo.log_entries_for_date(DAYS[0], SCOPES["live"], TaskFilters(), 200, 20)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(entries) == 20
    [(statement, parameters)] = served
    connection = db.session.connection()
    [[[explained]]] = connection.exec_driver_sql(
        "EXPLAIN (FORMAT JSON) " + statement, parameters
    ).all()

    # On PostgreSQL the log is partitioned by month (migration 0012): the day is read from its
    # month's partition, through that partition's copy of the index.
    day_index = set(
        connection.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'ix_task_logger_log_date_task_created_at_task_id'::regclass"
        ).scalars()
    )
    [limit] = [n for n in _nodes(explained["Plan"]) if n["Node Type"] == "Limit"]
    below = list(_nodes(limit))
    walks = [
        n
        for n in below
        if n.get("Index Name") in day_index and n.get("Scan Direction") == "Backward"
    ]
    assert walks, explained
    assert not [n for n in below if "Sort" in n["Node Type"]], explained
