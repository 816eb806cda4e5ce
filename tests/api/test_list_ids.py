"""The task list's ordered ids (app.repositories.tasks.list_task_ids), remembered per list and
generation, and its pages read by those ids (task_rows_of_ids): the same tasks in the same order
as the OFFSET path (task_rows_page) and the reference built per request (tasks_page), for every
scope, filter and sort, on both backends; and through the API, the same answers as with the ids
not remembered."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from app.cache.store import GLOBAL_GENERATION
from app.extensions import db
from app.models import Role, Task, TaskPriority, TaskStatus
from app.models.types import utcnow
from app.repositories import tasks as task_repo
from app.repositories.packed_ids import ids_at
from app.repositories.tasks import SORTABLE_COLUMNS, TaskFilters, TaskScope
from app.services import pages as page_service
from tests.conftest import Account

T0 = datetime(2030, 5, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def tasks(app: APIFlask, alice: Account, bob: Account) -> dict[str, int]:
    """Tasks of every status and priority, assigned or not, with and without a due date, some
    sharing a creation instant, two of them soft-deleted."""
    priorities = list(TaskPriority)
    now = utcnow()
    with app.app_context():
        made = []
        for n in range(14):
            task = Task(
                task_name=f"task {n % 5} {n}",
                status=TaskStatus.INACTIVE if n % 4 == 0 else TaskStatus.ACTIVE,
                priority=priorities[n % 4],
                created_by_id=(alice.id, bob.id)[n % 2],
                assigned_user_id=(None, alice.id, bob.id)[n % 3],
                created_at=T0 + timedelta(hours=n // 3),  # ties of three
                updated_at=now - timedelta(minutes=n % 5),
                due_date=None if n % 3 == 0 else date(2030, 6, 1 + n % 7),
            )
            db.session.add(task)
            made.append(task)
        db.session.flush()
        for task in made[5:7]:
            task.deleted_at = now
        db.session.commit()
        return {"alice": alice.id, "bob": bob.id}


def _cases(owners: dict[str, int]) -> list[tuple[TaskScope, TaskFilters]]:
    scopes = [
        TaskScope(owner_id=None),
        TaskScope(owner_id=None, include_deleted=True),
        TaskScope(owner_id=owners["alice"]),
        TaskScope(owner_id=owners["bob"], include_deleted=True),
    ]
    filter_sets = [
        TaskFilters(),
        TaskFilters(status=TaskStatus.ACTIVE),
        TaskFilters(priority=TaskPriority.HIGH, status=TaskStatus.ACTIVE),
        TaskFilters(unassigned=True),
        TaskFilters(assigned_user_id=owners["bob"]),
        TaskFilters(created_from=T0.date(), created_to=T0.date()),
        TaskFilters(due_from=date(2030, 6, 3), due_to=date(2030, 6, 5)),
    ]
    sorts: list[tuple[tuple[str, bool], ...]] = [
        ((name, descending),) for name in SORTABLE_COLUMNS for descending in (False, True)
    ]
    sorts += [(("priority", True), ("created_at", False)), (("status", False), ("id", True))]
    cases = [(scope, filters) for scope in scopes for filters in filter_sets]
    cases += [(scopes[0], TaskFilters(sort=sort)) for sort in sorts]
    cases += [(scopes[3], TaskFilters(sort=sort)) for sort in sorts[:4]]
    cases += [(scopes[1], TaskFilters(deleted_only=True))]
    return cases


def _listed(scope: TaskScope, filters: TaskFilters) -> list[int]:
    return [task.id for task in task_repo.tasks_page(scope, filters, 0, 1000)]


def test_a_lists_ids_and_their_rows_are_the_offset_paths_pages(
    app: APIFlask, tasks: dict[str, int], app_context: None
) -> None:
    windows = 0
    for scope, filters in _cases(tasks):
        listed = _listed(scope, filters)
        packed = task_repo.list_task_ids(scope, filters, limit=1000)
        assert packed is not None
        assert ids_at(packed, 0, 0, 1000) == listed, (scope, filters)
        for offset in range(0, len(listed) + 3, 3):
            by_offset = task_repo.task_rows_page(scope, filters, offset, 3)
            page_ids = ids_at(packed, 0, offset, 3)
            by_ids = task_repo.task_rows_of_ids(scope, filters, page_ids) if page_ids else []
            assert by_ids == by_offset, (scope, filters, offset)
            windows += 1
    assert windows > 100
    assert len(_listed(TaskScope(owner_id=None), TaskFilters())) == 12  # two soft-deleted


def test_more_ids_than_the_limit_or_a_search_give_none(
    app: APIFlask, tasks: dict[str, int], app_context: None
) -> None:
    scope, filters = TaskScope(owner_id=None), TaskFilters(status=TaskStatus.ACTIVE)
    listed = _listed(scope, filters)
    at_limit = task_repo.list_task_ids(scope, filters, limit=len(listed))
    assert at_limit is not None and ids_at(at_limit, 0, 0, 100) == listed
    assert task_repo.list_task_ids(scope, filters, limit=len(listed) - 1) is None
    assert task_repo.list_task_ids(scope, TaskFilters(q="task"), limit=100) is None


def test_rows_of_ids_leave_out_a_task_the_list_no_longer_holds(
    app: APIFlask, tasks: dict[str, int], app_context: None
) -> None:
    """Ids read before a write that the write's invalidation has not reached yet: the page
    applies the scope and filters again rather than show a task that left the list."""
    scope, filters = TaskScope(owner_id=None), TaskFilters(status=TaskStatus.ACTIVE)
    listed = _listed(scope, filters)
    deleted, deactivated = db.session.get(Task, listed[1]), db.session.get(Task, listed[2])
    assert deleted is not None and deactivated is not None
    deleted.deleted_at = utcnow()
    deactivated.status = TaskStatus.INACTIVE
    db.session.commit()
    rows = task_repo.task_rows_of_ids(scope, filters, listed[:4])
    assert [row["id"] for row in rows] == [listed[0], listed[3]]


def test_the_list_pages_match_through_the_api_with_and_without_remembered_ids(
    app: APIFlask,
    client: FlaskClient,
    tasks: dict[str, int],
    make_user: Any,
    login: Any,
    alice: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin_headers = login(make_user("list_ids_admin", Role.ADMIN))
    alice_headers = login(alice)
    queries = [
        {},
        {"status": "active", "sort": "priority"},
        {"priority": "LOW", "sort": "-due_date"},
        {"assigned_user": "none", "sort": "task_name"},
        {"deleted": "include", "sort": "-updated_at"},
        {"deleted": "only"},
        {"q": "task 3"},
    ]

    def pages(headers: dict[str, str], **params: Any) -> list[tuple[int, bytes, str]]:
        answers = []
        for page in (1, 2, 3, 5):
            response = client.get(
                "/tasks", query_string={**params, "page": page, "per_page": 3}, headers=headers
            )
            answers.append((response.status_code, response.data, response.headers.get("Link", "")))
        return answers

    def every_page() -> list[Any]:
        app.extensions["response_cache"].bump([GLOBAL_GENERATION])  # answered again
        return [pages(alice_headers, **q) for q in queries[:4]] + [
            pages(admin_headers, **q) for q in queries
        ]

    read_by_ids: list[int] = []
    real = task_repo.task_rows_of_ids

    def spy(*args: Any) -> Any:
        read_by_ids.append(1)
        return real(*args)

    monkeypatch.setattr(task_repo, "task_rows_of_ids", spy)
    by_ids = every_page()
    assert all(status == 200 for answers in by_ids for status, _, _ in answers)
    assert b'"total":12' in by_ids[4][0][1]
    assert len(read_by_ids) > 20, "the pages were read by their ids"
    # Lists longer than the ids remembered are counted and paged by OFFSET instead.
    monkeypatch.setattr(page_service, "MAX_REMEMBERED_IDS", 0)
    read_by_ids.clear()
    assert every_page() == by_ids
    assert read_by_ids == []
