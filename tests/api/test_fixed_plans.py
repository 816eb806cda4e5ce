"""The statements run on the driver's cursor go to a pool whose PostgreSQL sessions keep one
generic plan per statement (app.database.fixed_plan_engine: plan_cache_mode=force_generic_plan),
instead of planning every page again. A generic plan knows neither the page's OFFSET nor the
filters' values, so each statement must be written so that the plan it gets without them is
still the index walk every page wants: no sequential scan of task_manager or task_logger, no
hash join. Checked here on a table big enough for the planner to care, for every page shape
the list and the date view run; and the check itself is shown to catch the join form (the one
SQLite keeps), whose generic plan reads the whole table for a page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any

import psycopg
import pytest
from apiflask import APIFlask
from psycopg import sql
from sqlalchemy import text

from app.database import fixed_plan_engine
from app.extensions import db
from app.models import TaskPriority, TaskStatus
from app.repositories import task_logs as log_repo
from app.repositories import tasks as task_repo
from app.repositories.driver_cursor import compile_for_driver, fetch_all
from app.repositories.tasks import TaskFilters, TaskScope
from app.services import loader
from tests.conftest import Account

TASKS = 20_000
DAY = date(2030, 5, 6)
SORTS: list[tuple[tuple[str, bool], ...]] = [
    (("created_at", True),),
    (("created_at", False),),
    (("id", True),),
    (("id", False),),
]
FILTERS = [
    TaskFilters(),
    TaskFilters(status=TaskStatus.ACTIVE),
    TaskFilters(priority=TaskPriority.HIGH),
    TaskFilters(status=TaskStatus.INACTIVE, priority=TaskPriority.LOW),
]


@pytest.fixture
def big_table(app: APIFlask, backend: str, alice: Account, bob: Account) -> Iterator[None]:
    if backend != "postgresql":
        pytest.skip("plan_cache_mode is PostgreSQL's")
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO task_manager (task_name, status, priority, assigned_user_id,"
                " created_by_id, created_at, updated_at, version)"
                " SELECT 'task ' || n, (ARRAY['active', 'inactive'])[1 + n % 2],"
                " (ARRAY['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'])[1 + n % 4],"
                " CASE WHEN n % 50 = 0 THEN :alice ELSE :bob END, :bob,"
                " TIMESTAMPTZ '2030-01-01' + n * INTERVAL '1 minute', now(), 1"
                " FROM generate_series(1, :tasks) AS n"
            ),
            {"alice": alice.id, "bob": bob.id, "tasks": TASKS},
        )
        db.session.execute(text("UPDATE task_manager SET deleted_at = now() WHERE id % 997 = 0"))
        db.session.commit()
        assert loader.run_inline(DAY, "test").rows_logged > TASKS * 0.49  # the active half
        db.session.commit()
        # As autovacuum leaves a table: statistics, and the visibility map that makes an
        # index-only walk (the page's ids) cheaper than one that reads the rows.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE task_manager"))
            conn.execute(text("VACUUM ANALYZE task_logger"))
        yield


def _recorded(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str = "fetch_all"
) -> list[tuple[Any, dict[str, Any]]]:
    """The statements (and values) `module` runs on the driver's cursor from now on."""
    served: list[tuple[Any, dict[str, Any]]] = []
    real = getattr(module, name)

    def recording(engine: Any, statement: Any, values: Any, *args: Any) -> Any:
        served.append((statement, dict(values)))
        return real(engine, statement, values, *args)

    monkeypatch.setattr(module, name, recording)
    return served


def _generic_plan(statement: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The plan a session of the fixed-plan pool keeps for `statement`: PREPAREd there with its
    placeholders as $n, then EXPLAINed for `values` (which a generic plan does not look at)."""
    driver_statement = compile_for_driver(statement, fixed_plan_engine().dialect)
    params = driver_statement.parameters(values)
    assert isinstance(params, dict), "the psycopg dialect binds by name"
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", placeholder, driver_statement.sql).replace("%%", "%")
    raw = fixed_plan_engine().raw_connection()
    try:
        connection: psycopg.Connection[Any] = raw.dbapi_connection  # type: ignore[assignment]
        connection.autocommit = True
        with connection.cursor() as cursor:
            [[mode]] = cursor.execute("SHOW plan_cache_mode").fetchall()
            assert mode == "force_generic_plan"
            cursor.execute(f"PREPARE fixed_plan_probe AS {numbered}")  # type: ignore[arg-type]
            try:
                arguments = sql.SQL(", ").join(sql.Literal(params[n]) for n in names)
                explain = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE fixed_plan_probe({})").format(
                    arguments
                )
                [[[explained]]] = cursor.execute(explain).fetchall()
            finally:
                cursor.execute("DEALLOCATE fixed_plan_probe")
    finally:
        raw.close()
    plan: dict[str, Any] = explained["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _reads_a_whole_table(plan: dict[str, Any]) -> list[str]:
    return [
        f"{node['Node Type']} {node.get('Relation Name', '')}".strip()
        for node in _nodes(plan)
        if node["Node Type"] == "Hash Join"
        or (
            node["Node Type"] == "Seq Scan"
            and node.get("Relation Name") in ("task_manager", "task_logger")
        )
    ]


def _whole_table_reads(served: list[tuple[Any, dict[str, Any]]]) -> dict[str, list[str]]:
    """The statements among `served` whose generic plan reads a whole table, with those reads."""
    return {
        compile_for_driver(statement, fixed_plan_engine().dialect).sql: whole
        for statement, values in served
        if (whole := _reads_a_whole_table(_generic_plan(statement, values)))
    }


def _in_every_order(filter_sets: list[TaskFilters]) -> Iterator[TaskFilters]:
    """Each of `filter_sets` with each of the orders the list can be sorted in."""
    for filters in filter_sets:
        for sort in SORTS:
            yield replace(filters, sort=sort)


SCOPES = {
    "staff": TaskScope(owner_id=None),
    "admin with deleted": TaskScope(owner_id=None, include_deleted=True),
}


@pytest.mark.usefixtures("big_table")
def test_every_list_page_shape_keeps_an_index_plan(
    app: APIFlask, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = _recorded(monkeypatch, task_repo)
    scopes = {**SCOPES, "user": TaskScope(owner_id=alice.id)}
    filter_sets = [
        *FILTERS,
        TaskFilters(assigned_user_id=alice.id),
        TaskFilters(unassigned=True),
        TaskFilters(created_from=date(2030, 1, 3), created_to=date(2030, 1, 9)),
        TaskFilters(due_from=date(2030, 1, 3), due_to=date(2030, 1, 9)),
        TaskFilters(deleted_only=True),
    ]
    with app.app_context():
        for scope in scopes.values():
            for shaped in _in_every_order(filter_sets):
                assert task_repo.task_rows_page(scope, shaped, 980, 20) is not None
        assert len(served) == len(scopes) * len(filter_sets) * len(SORTS)
        bad = _whole_table_reads(served)
    assert not bad, bad


@pytest.mark.usefixtures("big_table")
def test_every_date_view_page_shape_keeps_an_index_plan(
    app: APIFlask, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = _recorded(monkeypatch, log_repo)
    filters = [
        *FILTERS,
        TaskFilters(assigned_user_id=alice.id),
        TaskFilters(created_from=date(2030, 1, 3), created_to=date(2030, 1, 9)),
    ]
    with app.app_context():
        for scope in SCOPES.values():
            for shaped in _in_every_order(filters):
                assert log_repo.log_page_rows(DAY, scope, shaped, 4980, 20) is not None
        assert len(served) == len(SCOPES) * len(filters) * len(SORTS)
        bad = _whole_table_reads(served)
    assert not bad, bad


@pytest.mark.usefixtures("big_table")
def test_every_page_read_by_its_ids_keeps_an_index_plan(
    app: APIFlask, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of the list or of a day whose ids are remembered: a primary-key lookup of its
    ids, with the list's scope and filters applied again (a generic plan must not scan the
    table for the filters instead)."""
    served_by_list = _recorded(monkeypatch, task_repo)
    served_by_day = _recorded(monkeypatch, log_repo)
    scopes = {**SCOPES, "user": TaskScope(owner_id=alice.id)}
    filter_sets = [*FILTERS, TaskFilters(unassigned=True), TaskFilters(deleted_only=True)]
    with app.app_context():
        for scope in scopes.values():
            for filters in filter_sets:
                task_repo.task_rows_of_ids(scope, filters, list(range(100, 120)))
        packed = log_repo.log_day_entries(DAY, SCOPES["staff"], TaskFilters(), TASKS)
        assert packed is not None
        assert len(log_repo.logged_rows_at(DAY, packed, 4980, 20)) == 20
        served = served_by_list + served_by_day
        assert len(served) == len(scopes) * len(filter_sets) + 1
        bad = _whole_table_reads(served)
    assert not bad, bad


@pytest.mark.usefixtures("big_table")
def test_a_task_by_id_keeps_an_index_plan(
    app: APIFlask, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = _recorded(monkeypatch, task_repo, "fetch_one")
    with app.app_context():
        for scope in (*SCOPES.values(), TaskScope(owner_id=alice.id)):
            task_repo.visible_task_row(50, scope)
        assert len(served) == 3
        for statement, values in served:
            assert not _reads_a_whole_table(_generic_plan(statement, values))


@pytest.mark.usefixtures("big_table")
def test_the_check_catches_a_page_joined_to_its_ids(
    app: APIFlask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join form (SQLite's) is a fine plan once the OFFSET is known, and a whole-table read
    as a generic plan: the reason the PostgreSQL form differs."""
    served = _recorded(monkeypatch, task_repo)
    with app.app_context():
        task_repo.task_rows_page(SCOPES["staff"], TaskFilters(status=TaskStatus.ACTIVE), 980, 20)
        [(statement, values)] = served
        assert not _reads_a_whole_table(_generic_plan(statement, values))
        shape, params = task_repo._page_shape(
            SCOPES["staff"], TaskFilters(status=TaskStatus.ACTIVE), 980, 20
        )
        joined = task_repo._page_rows_statement(shape, "sqlite")
        assert _reads_a_whole_table(_generic_plan(joined, params))
        assert len(fetch_all(fixed_plan_engine(), joined, params)) == 20


@pytest.mark.usefixtures("big_table")
def test_a_filtered_list_page_walks_the_index_its_filters_lead(
    app: APIFlask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of one status and/or priority walks only the entries it matches (an index whose
    leading columns are those filters, in the page's order), not every live task's entry with a
    filter on each: page 250 of one status and priority of 100,000 tasks would walk 25,000."""
    served = _recorded(monkeypatch, task_repo)
    with app.app_context():
        shapes = list(_in_every_order(FILTERS[1:]))
        for shaped in shapes:
            assert task_repo.task_rows_page(SCOPES["staff"], shaped, 980, 20) is not None
        walked = []
        for statement, values in served:
            plan = _generic_plan(statement, values)
            walked.append({node.get("Index Name") for node in _nodes(plan)} - {None})
    expected = [
        "ix_task_manager_live_"
        + "_".join(
            [*(["status"] if f.status else []), *(["priority"] if f.priority else [])]
            + (["id"] if f.sort[0][0] == "id" else ["created_at", "id"])
        )
        for f in shapes
    ]
    assert len(walked) == len(expected)
    for names, index in zip(walked, expected, strict=True):
        assert index in names, (index, names)
