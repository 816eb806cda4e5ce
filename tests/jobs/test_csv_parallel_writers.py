"""The CSV import written on several connections at once (app.services.csv_writers): the same
tasks, duplicates and audit as on one, whole batches only when a writer fails, and no writer
thread left behind. On SQLite the import falls back to one writer and gives the same result."""

from __future__ import annotations

import io
import threading
from collections import Counter

import pytest
from apiflask import APIFlask
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app.extensions import db
from app.models import Task, TaskAuditEntry, User
from app.services import csv_import
from tests.conftest import Account

HEADER = "task_name,description,status,priority,created_at,assigned_user"
BATCH = 3


def csv_bytes(rows: list[str]) -> io.BytesIO:
    return io.BytesIO(("\n".join([HEADER, *rows]) + "\n").encode())


def rows_with_duplicates(count: int) -> list[str]:
    """`count` distinct tasks over a few assignees, then each of the first ten again with
    another description (duplicates: same name, day and assignee), interleaved late."""
    rows = [
        f"Task {n},first {n},TRUE,LOW,2025-03-{1 + n % 28:02d},person_{n % 4}" for n in range(count)
    ]
    for n in range(10):
        rows.insert(
            count // 2 + 3 * n,
            f"task {n} ,second {n},FALSE,HIGH,3/{1 + n % 28}/2025,PERSON_{n % 4}",
        )
    return rows


def imported(
    app: APIFlask, actor: Account, rows: list[str], writers: int
) -> csv_import.ImportReport:
    with app.app_context():
        user = db.session.get(User, actor.id)
        assert user is not None
        report = csv_import.import_tasks(csv_bytes(rows), user, batch_size=BATCH, writers=writers)
        db.session.remove()
    return report


def stored(app: APIFlask) -> tuple[dict[str, str | None], Counter[int]]:
    """Each task's description by name, and the audit entries per task."""
    with app.app_context():
        tasks = {t.task_name: t.description for t in db.session.scalars(select(Task))}
        audit = Counter(db.session.scalars(select(TaskAuditEntry.task_id)))
        db.session.remove()
    return tasks, audit


def writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("csv-writer")]


@pytest.mark.parametrize("writers", [2, 3])
def test_several_writers_import_what_one_does(app: APIFlask, admin: Account, writers: int) -> None:
    rows = rows_with_duplicates(40)
    report = imported(app, admin, rows, writers)
    assert (report.rows, report.created, report.skipped_duplicates, report.failed) == (
        50,
        40,
        10,
        0,
    )
    assert report.users_created == 4
    tasks, audit = stored(app)
    # The first of each key's rows in file order is the one imported, whichever writer took it.
    assert tasks == {f"Task {n}": f"first {n}" for n in range(40)}
    assert sorted(audit.values()) == [1] * 40
    assert writer_threads() == []

    again = imported(app, admin, rows, writers)
    assert (again.created, again.skipped_duplicates) == (0, 50)


def test_a_writers_failure_reaches_the_caller_and_leaves_whole_batches(
    app: APIFlask, admin: Account, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite imports on one writer: its failure is covered by the API tests")
    # A real failure of the database, on one row's batch: a trigger refusing that task.
    with app.app_context():
        db.session.execute(
            text(
                """
                CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.task_name = 'Poison' THEN RAISE EXCEPTION 'poison row'; END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER refuse_poison BEFORE INSERT ON task_manager
                    FOR EACH ROW EXECUTE FUNCTION refuse_poison();
                """
            )
        )
        db.session.commit()
    try:
        rows = [f"Task {n},,TRUE,LOW,,person_{n % 4}" for n in range(60)]
        rows.insert(30, "Poison,,TRUE,LOW,,")
        with pytest.raises(DBAPIError, match="poison row"):
            imported(app, admin, rows, writers=2)
        assert writer_threads() == []
        tasks, audit = stored(app)
        assert "Poison" not in tasks
        # Each batch committed whole or not at all: every task has its one audit entry.
        assert sorted(audit.values()) == [1] * len(tasks)
        with app.app_context():
            assert db.session.scalar(select(func.count()).select_from(Task)) == len(tasks)
            db.session.remove()
    finally:
        with app.app_context():
            db.session.execute(text("DROP TRIGGER refuse_poison ON task_manager"))
            db.session.execute(text("DROP FUNCTION refuse_poison()"))
            db.session.commit()
