"""The daily task loader: snapshots every active task into `task_logger`, once per task per day.

A run covers one log date and is split into id-range chunks. Each chunk is one set-based
INSERT ... SELECT ... ON CONFLICT DO NOTHING in its own transaction, together with the mark that
the chunk is done, so:
- memory stays flat (no rows pass through Python) and no transaction holds millions of rows;
- chunks can run on different workers, in any order, any number of times: a done chunk is never
  redone, and a pair already logged (by this run, an earlier one or a concurrent one) is skipped;
- a run that dies half-way leaves its committed chunks; running the day again completes it.

Back-filled days (catch-up after beat was down) snapshot each task's state as of the run, not as
of the missed day: the past state is not recorded anywhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.exc import OperationalError

from app.cache.invalidation import invalidate_on_commit
from app.cache.store import date_generation
from app.extensions import db
from app.models.enums import LoaderRunState
from app.models.task_log import LoaderChunk, LoaderRun
from app.models.types import utcnow
from app.repositories import loader as loader_repo
from app.services import log_retention
from app.services.context import settings

log = logging.getLogger(__name__)

# PostgreSQL deadlock / serialization failures are transient: retry the chunk's transaction.
TRANSIENT_PGCODES = frozenset({"40P01", "40001"})
CHUNK_ATTEMPTS = 5


def plan_chunks(first_id: int | None, last_id: int | None, chunk_size: int) -> list[LoaderChunk]:
    if first_id is None or last_id is None:
        return []
    return [
        LoaderChunk(chunk_no=n, first_task_id=lo, last_task_id=min(lo + chunk_size - 1, last_id))
        for n, lo in enumerate(range(first_id, last_id + 1, chunk_size))
    ]


def start_run(log_date: date, trigger: str, job_id: str | None = None) -> LoaderRun:
    """Record a run for `log_date` with its chunk plan; its chunks are then run by workers or
    inline. A run with nothing to log succeeds at once."""
    log_retention.ensure_partitions(log_date)  # before any chunk writes the day's rows
    chunk_size = settings().loader_chunk_size
    first_id, last_id, eligible = loader_repo.active_task_id_bounds()
    chunks = plan_chunks(first_id, last_id, chunk_size)
    run = loader_repo.add_run(
        LoaderRun(
            log_date=log_date,
            trigger=trigger,
            job_id=job_id,
            chunk_size=chunk_size,
            chunks_total=len(chunks),
            chunks_done=0,
            rows_eligible=eligible,
            rows_logged=0,
            rows_skipped=0,
            state=LoaderRunState.RUNNING,
            started_at=utcnow(),
        ),
        chunks,
    )
    db.session.commit()
    log.info(
        "loader run %s for %s: %d active tasks in %d chunks",
        run.id,
        log_date,
        eligible,
        len(chunks),
    )
    if not chunks:
        _finish_if_complete(run)
    return run


def _is_transient(exc: OperationalError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in TRANSIENT_PGCODES


def run_chunk(run_id: int, chunk_no: int) -> int | None:
    """Log one chunk; returns rows inserted, or None when the chunk was already done."""
    for attempt in range(1, CHUNK_ATTEMPTS + 1):
        try:
            rows = _run_chunk_once(run_id, chunk_no)
            break
        except OperationalError as exc:
            db.session.rollback()
            if not _is_transient(exc) or attempt == CHUNK_ATTEMPTS:
                raise
            log.warning(
                "chunk %s/%s hit a transient error, retrying: %s", run_id, chunk_no, exc.orig
            )
            time.sleep(0.05 * attempt)
    run = loader_repo.get_run(run_id)
    if run is not None:
        _finish_if_complete(run)
    return rows


def _run_chunk_once(run_id: int, chunk_no: int) -> int | None:
    run = loader_repo.get_run(run_id)
    if run is None or not loader_repo.is_open(run):  # finished, or failed for real
        db.session.rollback()
        return None
    log_date = run.log_date
    now = utcnow()
    chunk = loader_repo.claim_chunk(run_id, chunk_no, now)
    if chunk is None:
        db.session.rollback()
        return None
    rows = loader_repo.log_active_tasks_in_range(
        log_date, chunk.first_task_id, chunk.last_task_id, now
    )
    loader_repo.record_chunk_rows(run_id, chunk_no, rows)
    if rows:  # cached answers of that day's log view are stale once this commits
        invalidate_on_commit([date_generation(log_date.isoformat())])
    db.session.commit()
    return rows


def _finish_if_complete(run: LoaderRun) -> None:
    now = utcnow()
    if loader_repo.finish_run_if_complete(run.id, now):
        loader_repo.supersede_older_runs(run, now)
        db.session.commit()
        db.session.refresh(run)
        log.info(
            "loader run %s for %s succeeded: %d logged, %d skipped",
            run.id,
            run.log_date,
            run.rows_logged,
            run.rows_skipped,
        )
    else:
        db.session.commit()


def fail_run(run_id: int, error: str) -> None:
    loader_repo.fail_run(run_id, error, utcnow())
    db.session.commit()


@dataclass(frozen=True)
class ChunkProgress:
    run: LoaderRun
    chunks_done: int
    chunks_total: int
    rows_logged: int


def running_run(log_date: date) -> LoaderRun | None:
    """The latest run of the day that is still running, if any."""
    return loader_repo.latest_running_run(log_date)


def is_stalled(run: LoaderRun) -> bool:
    """No chunk finished for `loader_stall_minutes`: its workers died and its chunk jobs were
    lost (a broker can drop a message taken by a worker killed at the wrong moment)."""
    quiet_for = utcnow() - loader_repo.last_progress_at(run)
    return quiet_for > timedelta(minutes=settings().loader_stall_minutes)


def pending_chunks(run_id: int) -> list[int]:
    return loader_repo.pending_chunk_numbers(run_id)


def run_inline(
    log_date: date,
    trigger: str,
    on_progress: Callable[[ChunkProgress], None] | None = None,
    job_id: str | None = None,
) -> LoaderRun:
    """Start a run and do every chunk in this process (the CLI, tests, small installs)."""
    run = start_run(log_date, trigger, job_id)
    run_id = run.id
    logged = 0
    pending = loader_repo.pending_chunk_numbers(run_id)
    total = run.chunks_total
    for done, chunk_no in enumerate(pending, start=1):
        try:
            logged += run_chunk(run_id, chunk_no) or 0
        except Exception as exc:
            db.session.rollback()
            fail_run(run_id, f"{exc.__class__.__name__}: {exc}")
            raise
        if on_progress is not None:
            on_progress(ChunkProgress(run, done, total, logged))
    finished = loader_repo.get_run(run_id)
    assert finished is not None
    db.session.refresh(finished)
    return finished


def dates_to_log(today: date, requested: date | None = None) -> list[date]:
    """The requested day; or, for the scheduled run, today plus every missed day: each day of the
    last `loader_max_catchup_days` (today included) with no successful run, from the day after
    the first day ever logged (a new install starts with today, not with a week of back-fill).
    A gap before a later success (e.g. a day logged by hand) is filled too."""
    if requested is not None:
        return [requested]
    first_logged = loader_repo.first_succeeded_log_date()
    if first_logged is None or first_logged > today:
        return [today]
    max_days = settings().loader_max_catchup_days
    first = max(first_logged + timedelta(days=1), today - timedelta(days=max_days - 1))
    if first > today:
        return []
    done = loader_repo.succeeded_dates_between(first, today)
    span = (today - first).days + 1
    return [d for d in (first + timedelta(days=i) for i in range(span)) if d not in done]
