"""Background jobs started through the API: their record, state and progress."""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from app.extensions import db
from app.models import Role
from app.models.enums import JobState, LoaderRunState
from app.models.job import Job
from app.models.types import utcnow
from app.repositories import jobs as job_repo
from app.repositories import loader as loader_repo
from app.services.actor import Actor
from app.services.context import celery, settings
from app.services.errors import NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

DAILY_LOG = "daily_log"
CSV_IMPORT = "csv_import"
IMPORT_CSV_JOB = "app.jobs.csv_import.import_csv_file"
LOG_DAY_JOB = "app.jobs.daily_log.log_day"
JOB_NOT_FOUND = "job not found"


def create_job(kind: str, params: dict[str, Any], created_by: Actor | None) -> Job:
    job = Job(
        id=str(uuid.uuid4()),
        kind=kind,
        params=params,
        state=JobState.QUEUED,
        created_by_id=created_by.id if created_by else None,
        created_at=utcnow(),
    )
    job_repo.add_job(job)
    db.session.commit()
    return job


def mark_started(job_id: str, result: dict[str, Any] | None = None) -> None:
    job = job_repo.get_job(job_id)
    if job is None:
        return
    job.state = JobState.RUNNING
    job.started_at = job.started_at or utcnow()
    if result is not None:
        job.result = {**(job.result or {}), **result}
    db.session.commit()


def mark_succeeded(job_id: str, result: dict[str, Any]) -> None:
    job = job_repo.get_job(job_id)
    if job is None:
        return
    now = utcnow()
    job.state = JobState.SUCCEEDED
    job.started_at = job.started_at or now
    job.finished_at = now
    job.result = {**(job.result or {}), **result}
    db.session.commit()


def mark_failed(job_id: str, error: str) -> None:
    job = job_repo.get_job(job_id)
    if job is None:
        return
    job.state = JobState.FAILED
    job.error = error[:2000]
    job.finished_at = utcnow()
    db.session.commit()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def job_status(job_id: str, viewer: Actor) -> dict[str, Any]:
    """A job's state and progress. A daily-log job's state follows its loader runs. Admins see
    every job; moderators their own (their CSV imports); others' answer 404."""
    if not _is_uuid(job_id):  # job ids are UUIDs; anything else (a NUL byte too) is no job
        raise NotFound(JOB_NOT_FOUND)
    job = job_repo.get_job(job_id)
    if job is None or (viewer.role != Role.ADMIN and job.created_by_id != viewer.id):
        raise NotFound(JOB_NOT_FOUND)
    status: dict[str, Any] = {
        "job_id": job.id,
        "kind": job.kind,
        "state": job.state,
        "params": job.params,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "result": job.result,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "runs": [],
    }
    if job.kind == DAILY_LOG:
        runs = loader_repo.runs_for_job(job.id)
        status["runs"] = runs
        if runs and job.state != JobState.FAILED:
            states = {run.state for run in runs}
            if LoaderRunState.FAILED in states:
                status["state"] = JobState.FAILED
            elif states == {LoaderRunState.SUCCEEDED}:
                status["state"] = JobState.SUCCEEDED
                status["finished_at"] = max(r.finished_at for r in runs if r.finished_at)
            else:
                status["state"] = JobState.RUNNING
            status["progress"] = {
                "done": sum(r.chunks_done for r in runs),
                "total": sum(r.chunks_total for r in runs),
            }
            status["result"] = {
                **(job.result or {}),
                "rows_logged": sum(r.rows_logged for r in runs),
                "rows_skipped": sum(r.rows_skipped for r in runs),
            }
    return status


def start_daily_log_job(log_date: date | None, requested_by: Actor) -> Job:
    """Record a daily-log job and queue it. A broker that cannot be reached fails the job and
    answers 503 rather than leaving a job that will never run."""
    day = log_date.isoformat() if log_date else None
    job = create_job(DAILY_LOG, {"date": day}, requested_by)
    try:
        # Through this app's own Celery app: its broker and eager setting, whichever app was
        # created last in the process.
        celery().tasks[LOG_DAY_JOB].apply_async(args=[day, "api", job.id])
    except Exception as exc:  # kombu raises several types for an unreachable broker
        mark_failed(job.id, f"could not queue the job: {exc}")
        raise ServiceUnavailable("the job queue is unavailable; try again later") from exc
    return job


def record_progress(job_id: str, done: int, total: int | None) -> None:
    job_repo.record_progress(job_id, done, total)


def start_csv_import_job(upload: IO[bytes], dry_run: bool, requested_by: Actor) -> Job:
    """Record the job, store the upload where the workers can read it and queue its import. The
    job's `created_at` is the upload's time for the import's assignee rule. The stored file
    never outlives the job: the job deletes it whatever its outcome (app/jobs/csv_import.py),
    and a job that cannot be stored or queued deletes it here."""
    job = create_job(CSV_IMPORT, {"dry_run": dry_run}, requested_by)
    path = _store_upload(upload, job.id)
    try:
        celery().tasks[IMPORT_CSV_JOB].apply_async(
            args=[job.id, str(path), requested_by.id, dry_run]
        )
    except Exception as exc:  # kombu raises several types for an unreachable broker
        path.unlink(missing_ok=True)
        if celery().conf.task_always_eager:
            # No broker (CELERY_ALWAYS_EAGER): the job ran here and failed. Its record says why,
            # and the client follows it as it would a worker's job.
            return job
        mark_failed(job.id, f"could not queue the job: {exc}")
        raise ServiceUnavailable("the job queue is unavailable; try again later") from exc
    return job


def _store_upload(upload: IO[bytes], job_id: str) -> Path:
    path = Path(settings().upload_dir) / f"{job_id}.csv"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            shutil.copyfileobj(upload, out, length=1024 * 1024)
    except OSError as exc:  # a full disk, or an UPLOAD_DIR that cannot be written
        with contextlib.suppress(OSError):  # no partial copy is left behind
            path.unlink(missing_ok=True)
        log.error("could not store the upload of CSV import job %s: %s", job_id, exc)
        mark_failed(job_id, f"could not store the upload: {exc.strerror or exc}")
        raise ServiceUnavailable("the upload could not be stored; try again later") from exc
    return path


def csv_import_upload_time(job_id: str) -> datetime | None:
    """When a CSV import job still to run was created, which is when its file was uploaded.
    None for a job finished already (a delivery repeated because its worker died before
    acknowledging it) or no longer recorded: such a job is not run again."""
    job = job_repo.get_job(job_id)
    if job is None or job.state in (JobState.SUCCEEDED, JobState.FAILED):
        return None
    return job.created_at
