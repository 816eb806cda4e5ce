"""The daily loader's queries: the set-based load of a day's active tasks into task_logger, and
its bookkeeping (runs and their chunks)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import ColumnElement, Date, and_, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db
from app.models import Task, TaskStatus
from app.models.enums import LoaderRunState
from app.models.task_log import LoaderChunk, LoaderRun, TaskLogEntry
from app.models.types import UTCDateTime

# --- the set-based load ---------------------------------------------------------------------


def _active_tasks() -> list[ColumnElement[bool]]:
    return [Task.status == TaskStatus.ACTIVE, Task.deleted_at.is_(None)]


def active_task_id_bounds() -> tuple[int | None, int | None, int]:
    """Smallest and largest id among active tasks, and how many there are."""
    row = db.session.execute(
        select(func.min(Task.id), func.max(Task.id), func.count()).where(*_active_tasks())
    ).one()
    return row[0], row[1], row[2]


def _dialect_insert() -> postgresql.Insert | sqlite.Insert:
    if db.engine.dialect.name == "postgresql":
        return postgresql.insert(TaskLogEntry)
    return sqlite.insert(TaskLogEntry)


def log_active_tasks_in_range(log_date: date, first_id: int, last_id: int, now: datetime) -> int:
    """INSERT ... SELECT the active tasks with ids in [first_id, last_id] for `log_date`, skipping
    pairs already logged (ON CONFLICT DO NOTHING). One statement; returns rows inserted.

    Rows are selected in id order so that two overlapping loads take row locks in the same
    order and cannot deadlock each other."""
    source = (
        select(
            Task.id,
            literal(log_date, Date),
            Task.status,
            Task.priority,
            Task.assigned_user_id,
            literal(now, UTCDateTime),
            Task.created_at,
        )
        .where(Task.id >= first_id, Task.id <= last_id, *_active_tasks())
        .order_by(Task.id)
    )
    columns = [
        "task_id",
        "log_date",
        "status",
        "priority",
        "assigned_user_id",
        "created_at",
        "task_created_at",
    ]
    stmt = (
        _dialect_insert()
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=["task_id", "log_date"])
        # SQLAlchemy keeps cursor.rowcount only for UPDATE and DELETE unless asked: without this
        # an INSERT ... SELECT reads -1 on psycopg (the cursor is closed by then).
        .execution_options(preserve_rowcount=True)
    )
    result = db.session.execute(stmt)
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- runs and chunks ------------------------------------------------------------------------

# The error of a run closed by a later run of its day; such a run may still be alive (a slow
# worker, a concurrent run): its chunks keep running and it can still finish (succeed).
SUPERSEDED_BY = "superseded by run "


def _open_run() -> ColumnElement[bool]:
    """Running, or presumed dead by a later run of its day (superseded)."""
    return or_(
        LoaderRun.state == LoaderRunState.RUNNING,
        and_(
            LoaderRun.state == LoaderRunState.FAILED,
            LoaderRun.error.startswith(SUPERSEDED_BY, autoescape=True),
        ),
    )


def is_open(run: LoaderRun) -> bool:
    return run.state == LoaderRunState.RUNNING or (
        run.state == LoaderRunState.FAILED and (run.error or "").startswith(SUPERSEDED_BY)
    )


def latest_running_run(log_date: date) -> LoaderRun | None:
    return db.session.scalar(
        select(LoaderRun)
        .where(LoaderRun.log_date == log_date, LoaderRun.state == LoaderRunState.RUNNING)
        .order_by(LoaderRun.id.desc())
        .limit(1)
    )


def last_progress_at(run: LoaderRun) -> datetime:
    """When the run last finished a chunk (or started)."""
    last_chunk = db.session.scalar(
        select(func.max(LoaderChunk.done_at)).where(LoaderChunk.run_id == run.id)
    )
    return max(run.started_at, last_chunk) if last_chunk else run.started_at


def add_run(run: LoaderRun, chunks: list[LoaderChunk]) -> LoaderRun:
    db.session.add(run)
    db.session.flush()
    for chunk in chunks:
        chunk.run_id = run.id
    db.session.add_all(chunks)
    return run


def get_run(run_id: int) -> LoaderRun | None:
    return db.session.get(LoaderRun, run_id)


def runs_for_job(job_id: str) -> list[LoaderRun]:
    return list(
        db.session.scalars(
            select(LoaderRun).where(LoaderRun.job_id == job_id).order_by(LoaderRun.id)
        )
    )


def pending_chunk_numbers(run_id: int) -> list[int]:
    return list(
        db.session.scalars(
            select(LoaderChunk.chunk_no)
            .where(LoaderChunk.run_id == run_id, LoaderChunk.done_at.is_(None))
            .order_by(LoaderChunk.chunk_no)
        )
    )


def claim_chunk(run_id: int, chunk_no: int, now: datetime) -> LoaderChunk | None:
    """Mark a chunk done inside the current transaction, atomically: None when it was done
    already (or is being done by a transaction that commits first)."""
    result = db.session.execute(
        update(LoaderChunk)
        .where(
            LoaderChunk.run_id == run_id,
            LoaderChunk.chunk_no == chunk_no,
            LoaderChunk.done_at.is_(None),
        )
        .values(done_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return db.session.scalar(
        select(LoaderChunk).where(LoaderChunk.run_id == run_id, LoaderChunk.chunk_no == chunk_no)
    )


def record_chunk_rows(run_id: int, chunk_no: int, rows: int) -> None:
    db.session.execute(
        update(LoaderChunk)
        .where(LoaderChunk.run_id == run_id, LoaderChunk.chunk_no == chunk_no)
        .values(rows_logged=rows)
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        update(LoaderRun)
        .where(LoaderRun.id == run_id)
        .values(chunks_done=LoaderRun.chunks_done + 1, rows_logged=LoaderRun.rows_logged + rows)
        .execution_options(synchronize_session=False)
    )


def finish_run_if_complete(run_id: int, now: datetime) -> bool:
    """Mark the run succeeded once every chunk is done; True for the one caller that did it."""
    result = db.session.execute(
        update(LoaderRun)
        .where(
            LoaderRun.id == run_id,
            _open_run(),
            LoaderRun.chunks_done >= LoaderRun.chunks_total,
        )
        .values(
            state=LoaderRunState.SUCCEEDED,
            error=None,
            finished_at=now,
            rows_skipped=func.max(LoaderRun.rows_eligible - LoaderRun.rows_logged, 0)
            if db.engine.dialect.name == "sqlite"
            else func.greatest(LoaderRun.rows_eligible - LoaderRun.rows_logged, 0),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def fail_run(run_id: int, error: str, now: datetime) -> None:
    db.session.execute(
        update(LoaderRun)
        .where(LoaderRun.id == run_id, _open_run())
        .values(state=LoaderRunState.FAILED, error=error[:2000], finished_at=now)
        .execution_options(synchronize_session=False)
    )


def supersede_older_runs(run: LoaderRun, now: datetime) -> None:
    """Earlier runs of the same day that have not finished are closed: presumably their process
    died. One that was only slow (or concurrent) goes on and still succeeds (see `_open_run`)."""
    db.session.execute(
        update(LoaderRun)
        .where(
            LoaderRun.log_date == run.log_date,
            LoaderRun.id < run.id,
            LoaderRun.state == LoaderRunState.RUNNING,
        )
        .values(state=LoaderRunState.FAILED, error=f"{SUPERSEDED_BY}{run.id}", finished_at=now)
        .execution_options(synchronize_session=False)
    )


def first_succeeded_log_date() -> date | None:
    """The earliest day ever logged successfully."""
    return db.session.scalar(
        select(func.min(LoaderRun.log_date)).where(LoaderRun.state == LoaderRunState.SUCCEEDED)
    )


def succeeded_dates_between(first: date, last: date) -> set[date]:
    return set(
        db.session.scalars(
            select(LoaderRun.log_date).where(
                LoaderRun.state == LoaderRunState.SUCCEEDED,
                LoaderRun.log_date >= first,
                LoaderRun.log_date <= last,
            )
        )
    )


def recent_runs(limit: int) -> list[LoaderRun]:
    return list(db.session.scalars(select(LoaderRun).order_by(LoaderRun.id.desc()).limit(limit)))


def loader_totals() -> tuple[int, datetime | None]:
    """All rows the loader has logged, and when its latest successful run finished."""
    row = db.session.execute(
        select(
            func.coalesce(func.sum(LoaderRun.rows_logged), 0),
            func.max(LoaderRun.finished_at).filter(LoaderRun.state == LoaderRunState.SUCCEEDED),
        )
    ).one()
    last = row[1]
    if isinstance(last, str):  # SQLite hands back aggregate timestamps as text
        last = datetime.fromisoformat(last).replace(tzinfo=UTC)
    elif last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return int(row[0]), last


def rows_logged_per_day(since: date) -> dict[date, int]:
    """Rows the loader logged per log date, from its run records (no scan of the big table)."""
    rows = db.session.execute(
        select(LoaderRun.log_date, func.sum(LoaderRun.rows_logged))
        .where(LoaderRun.log_date >= since)
        .group_by(LoaderRun.log_date)
    ).all()
    return {row[0]: int(row[1] or 0) for row in rows}
