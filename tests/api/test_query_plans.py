"""Every list query is served by an index on PostgreSQL (#24): for every sort, in both directions,
and every filter shape of the task list and of the date view, the statements the app sends for a
real request are planned without a sequential scan of task_manager or task_logger; a first page
without filters, or with a filter that few tasks match, reads a few rows (in the order of an
index, not all of them sorted); a search (`q`) reads the trigram indexes, and finds through
them what a scan finds. And the search finds what it always found: any case-insensitive
substring of the name or the description (both backends).

The plans are PostgreSQL's, taken with `enable_seqscan = off`: on tables of a few thousand rows
the planner rightly prefers to read them whole, and with sequential scans priced out of reach a
`Seq Scan` remains only where no index can serve the statement at all."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import event, insert, select, text

from app.extensions import db
from app.models import Role, Task, TaskPriority, TaskStatus
from app.repositories import tasks as task_repo
from app.repositories.task_order import SORTABLE_COLUMNS
from app.repositories.tasks import TaskFilters, TaskScope
from app.services import loader
from tests.conftest import Account

BIG_TABLES = frozenset({"task_manager", "task_logger"})
TRIGRAM_INDEXES = frozenset({"ix_task_manager_task_name_trgm", "ix_task_manager_description_trgm"})
DAY = date(2031, 6, 1)
BASE = datetime(2031, 1, 1, tzinfo=UTC)
TASKS = 3000
RARE = "zebra"  # in 3 tasks' names or descriptions
COMMON = "report"  # in most of them
# The shapes whose first page must read a few rows, whatever the sort: without a filter, the
# page's rows are the first ones of an index (a few more where runs of one value are re-sorted
# by id; a run of one priority is TASKS / 4 rows, of one status more); with a filter few tasks
# match, the index of that filter finds them (in the date view too, where the assignee filters
# the day's snapshot).
BOUNDED = ("no filter", "deleted=include", "assigned_user, few tasks", "q rare")
FIRST_PAGE_MOST_ROWS = TASKS // 10
# The date view in the order of a task's current status, descending: it walks task_manager's
# (status, id) index from the inactive tasks, which the loader never logs (it logs active ones),
# to the first logged one, each looked up in the day's log. In index order still (no sort), but
# the page costs as many lookups as there are inactive tasks: a known limit.
WALKS_PAST_UNLOGGED_TASKS = {("date view", "-status")}
SORTS = [f"{direction}{name}" for name in SORTABLE_COLUMNS for direction in ("", "-")]


@dataclass(frozen=True)
class Seeded:
    headers: dict[str, dict[str, str]]  # account -> Authorization header
    bob: int
    carol: int  # assigned a few tasks


def _description(n: int) -> str | None:
    if n % 7 == 0:
        return None
    if n in (11, 222):
        return f"feed the {RARE.upper()}s"
    return f"weekly {COMMON} number {n}" if n % 5 else "nothing to say"


def _task(n: int, creators: list[int], assignees: list[int | None]) -> dict[str, Any]:
    return {
        "task_name": f"{RARE}-crossing {n}" if n == 400 else f"Task {n:04d} {COMMON}",
        "description": _description(n),
        "status": TaskStatus.INACTIVE if n % 5 == 2 else TaskStatus.ACTIVE,
        "priority": list(TaskPriority)[n % 4],
        "assigned_user_id": assignees[n % len(assignees)],
        "created_by_id": creators[n % len(creators)],
        "created_at": BASE + timedelta(hours=7 * n),
        "updated_at": BASE + timedelta(hours=7 * n, minutes=(n * 37) % 600),
        "due_date": None if n % 3 == 0 else (BASE + timedelta(days=n % 120)).date(),
        "deleted_at": BASE if n % 100 == 0 else None,
    }


def _seed(app: APIFlask, accounts: dict[str, Account]) -> None:
    """TASKS tasks of every status, priority, assignee and due date (some without), a few
    soft-deleted; the active live ones logged on DAY, some deleted since; the tables vacuumed
    and analysed, as autovacuum leaves them."""
    alice, bob, admin = accounts["alice"], accounts["bob"], accounts["admin"]
    carol = accounts["carol"]
    creators = [admin.id, admin.id, alice.id, bob.id]
    assignees: list[int | None] = [None, alice.id, bob.id, admin.id, bob.id]
    with app.app_context():
        rows = [_task(n, creators, assignees) for n in range(TASKS)]
        for row in rows[3::500]:
            row["assigned_user_id"] = carol.id
        db.session.execute(insert(Task), rows)
        db.session.commit()
        run = loader.run_inline(DAY, "test")
        assert run.state.value == "succeeded", run.error
        # Some logged on DAY, deleted since: the date view's deleted=only lists them.
        db.session.execute(
            text("UPDATE task_manager SET deleted_at = :now WHERE id % 100 = 51"), {"now": BASE}
        )
        db.session.commit()
        db.session.remove()
        # VACUUM as well: it moves the rows out of the GIN indexes' pending list (where a fresh
        # index keeps them until then, and every search reads them all) and counts their entries,
        # which is how the planner prices them; and it sets the visibility map (index-only scans).
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE task_manager")
            connection.exec_driver_sql("VACUUM ANALYZE task_logger")


@pytest.fixture
def seeded(
    app: APIFlask,
    backend: str,
    make_user: Callable[..., Account],
    login: Callable[[Account], dict[str, str]],
) -> Seeded:
    if backend != "postgresql":
        pytest.skip("the plans are PostgreSQL's")
    accounts = {
        "admin": make_user("plan_admin", Role.ADMIN),
        "alice": make_user("plan_alice"),
        "bob": make_user("plan_bob"),
        "carol": make_user("plan_carol"),
    }
    _seed(app, accounts)
    headers = {name: login(account) for name, account in accounts.items()}
    return Seeded(headers, accounts["bob"].id, accounts["carol"].id)


def _filter_shapes(seeded: Seeded) -> dict[str, tuple[str, dict[str, Any]]]:
    """Shape name -> (the account asking, the query's filters)."""
    return {
        "no filter": ("admin", {}),
        "status": ("admin", {"status": "active"}),  # the date view logs active tasks only
        "priority": ("admin", {"priority": "HIGH"}),
        "status+priority": ("admin", {"status": "active", "priority": "LOW"}),
        "assigned_user": ("admin", {"assigned_user": str(seeded.bob)}),
        "assigned_user, few tasks": ("admin", {"assigned_user": str(seeded.carol)}),
        "unassigned": ("admin", {"assigned_user": "none"}),
        "created range": ("admin", {"created_from": "2031-02-01", "created_to": "2031-03-15"}),
        "due range": ("admin", {"due_from": "2031-02-10", "due_to": "2031-02-20"}),
        "q rare": ("admin", {"q": RARE}),
        "q common": ("admin", {"q": COMMON}),
        "user scope": ("alice", {}),
        "user scope, q": ("alice", {"q": RARE}),
        "deleted=include": ("admin", {"deleted": "include"}),
        "deleted=only": ("admin", {"deleted": "only"}),
    }


Statement = tuple[str, Any]  # SQL as sent to the driver, and its parameters


def _statements_of(
    app: APIFlask, client: FlaskClient, headers: dict[str, str], query: Any
) -> list[Statement]:
    """The SELECTs on task_manager or task_logger the app sends to answer GET /tasks?query."""
    with app.app_context():
        engine = db.engine
    sent: list[Statement] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and any(
            table in statement for table in BIG_TABLES
        ):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get("/tasks", query_string=query, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, (query, response.json)
    return sent


def _plan(statement: str, parameters: Any, *, analyze: bool = False, **settings: str) -> Any:
    """The statement's plan (EXPLAIN, JSON; run and measured with `analyze`), sequential scans
    priced out, with `settings` too."""
    connection = db.session.connection()
    for name, value in {"enable_seqscan": "off", **settings}.items():
        connection.exec_driver_sql(f"SET LOCAL {name} = {value}")
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    [[[explained]]] = connection.exec_driver_sql(
        f"EXPLAIN ({options}) " + statement, parameters
    ).all()
    db.session.rollback()  # the SET LOCALs end with it
    return explained["Plan"]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _seq_scans(plan: dict[str, Any]) -> list[str]:
    return [
        node["Relation Name"]
        for node in _nodes(plan)
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG_TABLES
    ]


def _rows_read(plan: dict[str, Any]) -> int:
    """How many rows of task_manager and task_logger the statement read (those its filters then
    dropped included), as measured by EXPLAIN ANALYZE."""
    return sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in _nodes(plan)
        if node.get("Relation Name") in BIG_TABLES
    )


def _index_names(plan: dict[str, Any]) -> set[str]:
    return {str(node["Index Name"]) for node in _nodes(plan) if "Index Name" in node}


@pytest.mark.parametrize("list_name", ["tasks", "date view"])
def test_no_list_query_scans_a_big_table(
    app: APIFlask, client: FlaskClient, seeded: Seeded, list_name: str
) -> None:
    """Every sort in both directions x every filter shape: no sequential scan of task_manager or
    task_logger; and without filters, a first page is read in the order of an index: a few
    rows, not all of them sorted (nor a run of one status or priority sorted by id)."""
    extra = {"date": DAY.isoformat()} if list_name == "date view" else {}
    scans: list[str] = []
    sorted_pages: list[str] = []  # read the whole table, or a long run of one value, to sort it
    for shape, (account, filters) in _filter_shapes(seeded).items():
        for sort in SORTS:
            query = {**filters, **extra, "sort": sort, "per_page": 5}
            statements = _statements_of(app, client, seeded.headers[account], query)
            assert statements, query  # a page at least (its total may be remembered)
            with app.app_context():
                for statement, parameters in statements:
                    plan = _plan(statement, parameters)
                    if scanned := _seq_scans(plan):
                        scans.append(f"{list_name}, {shape}, sort={sort}: {scanned}\n{statement}")
                    # The page (a total's count is bounded by COUNT_EXACT_UP_TO instead:
                    # tests/api/test_bounded_totals.py).
                    is_count = statement.lstrip().lower().startswith("select count(")
                    if (
                        shape in BOUNDED
                        and " LIMIT " in statement
                        and not is_count
                        and (list_name, sort) not in WALKS_PAST_UNLOGGED_TASKS
                    ):
                        measured = _plan(statement, parameters, analyze=True)
                        if (read := _rows_read(measured)) > FIRST_PAGE_MOST_ROWS:
                            sorted_pages.append(f"{list_name}, {shape}, sort={sort}: {read} rows")

    assert not scans, "\n\n".join(scans)
    assert not sorted_pages, "\n".join(sorted_pages)


def test_a_search_reads_the_trigram_indexes(
    app: APIFlask, client: FlaskClient, seeded: Seeded
) -> None:
    for account, query in (
        ("admin", {"q": RARE}),
        ("admin", {"q": RARE, "deleted": "include"}),
        ("admin", {"q": RARE, "status": "active", "sort": "task_name"}),
        ("admin", {"q": RARE, "date": DAY.isoformat()}),
        ("alice", {"q": "ZEBR"}),
    ):
        statements = _statements_of(app, client, seeded.headers[account], query)
        with app.app_context():
            used = set().union(*(_index_names(_plan(*statement)) for statement in statements))
        assert used >= TRIGRAM_INDEXES, (query, used)  # a BitmapOr of the two

    found = client.get(
        "/tasks", query_string={"q": RARE, "deleted": "include"}, headers=seeded.headers["admin"]
    )
    assert found.status_code == 200 and found.json["total"] == 3


# --- what a search finds ------------------------------------------------------------------------

SEARCHED = {
    "Quarterly ZEBRAFISH census": None,
    "Plain": "The mitochondrial Powerhouse",
    "Other": None,
    "100% done": "snake_case and a\\backslash",
}


def _found(client: FlaskClient, headers: dict[str, str], q: str) -> set[str]:
    response = client.get("/tasks", query_string={"q": q, "per_page": 100}, headers=headers)
    assert response.status_code == 200, response.json
    return {item["task_name"] for item in response.json["items"]}


def _expected(q: str) -> set[str]:
    return {
        name
        for name, description in SEARCHED.items()
        if q.lower() in name.lower() or q.lower() in (description or "").lower()
    }


SEARCH_TERMS = [
    "BRAFI",  # the middle of a word, another case
    "zebrafish census",
    "ochONDr",  # in a description
    "erho",
    "powerhouse",
    "ar",  # shorter than a trigram
    "e",
    "%",  # LIKE's wildcards and escape character are plain characters
    "0% d",
    "_",
    "e_c",
    "\\",
    "a\\b",
    "nowhere",
]


def test_a_search_finds_substrings_anywhere_in_any_case(
    app: APIFlask, client: FlaskClient, admin: Account, login: Callable[[Account], dict[str, str]]
) -> None:
    headers = login(admin)
    for name, description in SEARCHED.items():
        body = {"task_name": name, "description": description}
        assert client.post("/task", json=body, headers=headers).status_code == 201

    for q in SEARCH_TERMS:
        assert _found(client, headers, q) == _expected(q), q
    assert _expected("BRAFI") == {"Quarterly ZEBRAFISH census"}  # the cases find something
    assert _expected("ochONDr") == {"Plain"}


def test_the_trigram_indexes_find_what_a_scan_finds(
    app: APIFlask, client: FlaskClient, seeded: Seeded
) -> None:
    """The same tasks whether the search reads the trigram indexes or filters every row (the
    index only proposes candidates; each is checked again): LIKE's special characters, cases."""
    for name, description in SEARCHED.items():
        body = {"task_name": name, "description": description}
        response = client.post("/task", json=body, headers=seeded.headers["admin"])
        assert response.status_code == 201
    with app.app_context():
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE task_manager")
        every = db.session.execute(select(Task.id, Task.task_name, Task.description)).all()

        # Deleted tasks too: no other index then has a condition to offer, so with sequential and
        # plain index scans off the search is read from the trigram indexes whatever it costs.
        scope = TaskScope(owner_id=None, include_deleted=True)
        for q in SEARCH_TERMS:
            expected = {
                task_id
                for task_id, name, description in every
                if q.lower() in name.lower() or q.lower() in (description or "").lower()
            }
            filters = TaskFilters(q=q)
            by_index, used = _searched(
                filters,
                scope,
                enable_seqscan="off",
                enable_indexscan="off",
                enable_indexonlyscan="off",
            )
            by_scan, _ = _searched(filters, scope, enable_bitmapscan="off")
            assert by_index == by_scan == expected, q
            if TRIGRAMS.search(q):  # else there is no trigram to look up
                assert used >= TRIGRAM_INDEXES, (q, used)


# pg_trgm's trigrams come from runs of letters and digits (a LIKE pattern's inner ones unpadded).
TRIGRAMS = re.compile(r"[^\W_]{3}")


def _searched(filters: TaskFilters, scope: TaskScope, **settings: str) -> tuple[set[int], set[str]]:
    """The tasks a search finds with these planner settings, and the indexes it read."""
    sent: list[Statement] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    connection = db.session.connection()
    for name, value in settings.items():
        connection.exec_driver_sql(f"SET LOCAL {name} = {value}")
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        found = {task.id for task in task_repo.tasks_page(scope, filters, 0, TASKS * 2)}
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    [(statement, parameters)] = sent
    [[[explained]]] = connection.exec_driver_sql(
        "EXPLAIN (FORMAT JSON) " + statement, parameters
    ).all()
    db.session.rollback()
    return found, _index_names(explained["Plan"])


OWNER_INDEXES = frozenset(
    {
        "ix_task_manager_assigned_user_id_created_at_id",
        "ix_task_manager_created_by_id_created_at_id",
    }
)


@pytest.mark.parametrize("sort", ["-created_at", "created_at"])
def test_a_users_first_page_is_read_from_the_owner_indexes(
    app: APIFlask, client: FlaskClient, seeded: Seeded, sort: str
) -> None:
    """A user's list in the default order is two index ranges (tasks assigned to them, tasks they
    created and are not assigned to them), each stopped after a page: not a BitmapOr of every
    one of the user's tasks sorted, whose cost grows with the user's tasks (at 10 million tasks
    the planner chooses it, and here it would walk the list's created_at index instead)."""
    per_page = 5
    query = {"sort": sort, "per_page": per_page}
    statements = _statements_of(app, client, seeded.headers["alice"], query)
    pages = [s for s in statements if not s[0].lstrip().lower().startswith("select count(")]
    [(statement, parameters)] = pages
    with app.app_context():
        measured = _plan(statement, parameters, analyze=True)
    assert _index_names(measured) >= OWNER_INDEXES
    # About a page from each range (a row more to close a run of equal created_at, and in the
    # creator's range the tasks also assigned to the user, skipped), and the page's rows: not
    # the user's hundreds of tasks.
    assert _rows_read(measured) <= 4 * per_page
