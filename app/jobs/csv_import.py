"""Celery job of the CSV import for large files."""

from __future__ import annotations

import logging
from pathlib import Path

from celery import shared_task

from app.repositories import users as user_repo
from app.services import csv_import
from app.services import jobs as job_service

log = logging.getLogger(__name__)


@shared_task(name="app.jobs.csv_import.import_csv_file")
def import_csv_file(job_id: str, path: str, actor_id: int, dry_run: bool) -> dict[str, object]:
    """Import a stored upload, recording progress (rows processed / total) on the job. Re-running
    it after a crash is safe: rows already imported are skipped as duplicates."""
    upload = Path(path)
    actor = user_repo.get_user(actor_id)
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
                on_progress=lambda done: job_service.record_progress(job_id, done, total),
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
