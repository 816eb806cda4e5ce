"""Celery job of the CSV import for large files."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import IO

from celery import shared_task

from app.extensions import db
from app.models import User
from app.repositories import users as user_repo
from app.services import csv_import
from app.services import jobs as job_service
from app.services.context import settings
from app.services.errors import DomainError

log = logging.getLogger(__name__)


@shared_task(name="app.jobs.csv_import.import_csv_file")
def import_csv_file(job_id: str, path: str, actor_id: int, dry_run: bool) -> dict[str, object]:
    """Import a stored upload, recording progress (rows processed / total) on the job. Re-running
    it after a crash is safe: rows already imported are skipped as duplicates.

    The upload is deleted once the job is over, whatever its outcome: imported, dry run,
    refused (a file over the rows cap or unreadable; a job finished already or no longer
    recorded) or failed. A failed import is uploaded again, never retried from the stored copy,
    which would otherwise stay on disk for good. Only a worker that dies or is stopped mid-way
    (killed, or a BaseException such as SystemExit) leaves it: its job is delivered again
    (task_reject_on_worker_lost) and needs the file."""
    upload = Path(path)
    try:
        outcome = _run(job_id, upload, actor_id, dry_run)
    except Exception as exc:
        upload.unlink(missing_ok=True)
        log.exception("CSV import job %s failed", job_id)
        job_service.mark_failed(job_id, f"{exc.__class__.__name__}: {exc}")
        raise
    upload.unlink(missing_ok=True)
    return outcome


def _run(job_id: str, upload: Path, actor_id: int, dry_run: bool) -> dict[str, object]:
    uploaded_at = job_service.csv_import_upload_time(job_id)
    if uploaded_at is None:
        log.warning("CSV import job %s is finished or unknown: not run again", job_id)
        return {"skipped": "the job is finished or no longer recorded"}
    actor = user_repo.get_user(actor_id)
    if actor is None:
        raise RuntimeError(f"user {actor_id} no longer exists")
    with upload.open("rb") as stream:
        try:
            total = csv_import.count_rows_within_cap(stream)
        except DomainError as exc:
            return _refuse(job_id, exc)
        return _import(job_id, stream, actor, uploaded_at, total, dry_run)


def _refuse(job_id: str, exc: DomainError) -> dict[str, object]:
    """A file refused whole before anything is written (unreadable, or over the rows cap): the
    job fails and its record says why. Not raised: it is the file's fault, not the worker's."""
    reason = f"refused, nothing imported: {exc.message}"
    log.warning("CSV import job %s %s", job_id, reason)
    job_service.mark_failed(job_id, reason)
    return {"refused": reason}


def _import(
    job_id: str, stream: IO[bytes], actor: User, uploaded_at: datetime, total: int, dry_run: bool
) -> dict[str, object]:
    # SQLite has one writer at a time: during a dry run (one transaction holding the write lock
    # until its rollback) progress, written on a connection of its own, would wait for it and
    # fail with "database is locked". There the progress is recorded at the end only.
    quiet = dry_run and db.engine.dialect.name == "sqlite"

    def progress(done: int) -> None:
        if not quiet:
            job_service.record_progress(job_id, done, total)

    job_service.mark_started(job_id)
    job_service.record_progress(job_id, 0, total)
    report = csv_import.import_tasks(
        stream,
        actor,
        uploaded_at=uploaded_at,
        dry_run=dry_run,
        batch_size=settings().csv_batch_rows,
        writers=settings().csv_import_writers,
        on_progress=progress,
    )
    result = report.as_dict()
    job_service.record_progress(job_id, report.rows, report.rows)
    job_service.mark_succeeded(job_id, result)
    log.info("CSV import job %s: %s", job_id, {k: v for k, v in result.items() if k != "errors"})
    return result
