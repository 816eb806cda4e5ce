"""Celery job of the CSV import for large files."""

from __future__ import annotations

import logging
from pathlib import Path

from celery import shared_task

from app.extensions import db
from app.repositories import users as user_repo
from app.services import csv_import
from app.services import jobs as job_service
from app.services.context import settings

log = logging.getLogger(__name__)


@shared_task(name="app.jobs.csv_import.import_csv_file")
def import_csv_file(job_id: str, path: str, actor_id: int, dry_run: bool) -> dict[str, object]:
    """Import a stored upload, recording progress (rows processed / total) on the job. Re-running
    it after a crash is safe: rows already imported are skipped as duplicates."""
    upload = Path(path)
    actor = user_repo.get_user(actor_id)
    total: int | None = None
    # SQLite has one writer at a time: during a dry run (one transaction holding the write lock
    # until its rollback) progress, written on a connection of its own, would wait for it and
    # fail with "database is locked". There the progress is recorded at the end only.
    quiet = dry_run and db.engine.dialect.name == "sqlite"

    def progress(done: int) -> None:
        if not quiet:
            job_service.record_progress(job_id, done, total)

    try:
        if actor is None:
            raise RuntimeError(f"user {actor_id} no longer exists")
        with upload.open("rb") as stream:
            total = csv_import.count_rows(stream)
            job_service.mark_started(job_id)
            job_service.record_progress(job_id, 0, total)
            report = csv_import.import_tasks(
                stream,
                actor,
                dry_run=dry_run,
                batch_size=settings().csv_batch_rows,
                on_progress=progress,
            )
    except Exception as exc:
        log.exception("CSV import job %s failed", job_id)
        job_service.mark_failed(job_id, f"{exc.__class__.__name__}: {exc}")
        raise
    result = report.as_dict()
    job_service.record_progress(job_id, report.rows, report.rows)
    job_service.mark_succeeded(job_id, result)
    upload.unlink(missing_ok=True)
    log.info("CSV import job %s: %s", job_id, {k: v for k, v in result.items() if k != "errors"})
    return result
