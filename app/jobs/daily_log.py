"""Celery jobs of the daily loader: plan the days, fan chunks out to workers."""

from __future__ import annotations

import logging
from datetime import date

from celery import group, shared_task

from app.models.types import utcnow
from app.services import jobs as job_service
from app.services import loader

log = logging.getLogger(__name__)


def _dispatch_day(log_date: date, trigger: str, job_id: str | None) -> int:
    run = loader.start_run(log_date, trigger, job_id)
    pending = loader.pending_chunks(run.id)
    if pending:
        # The distributed part: each chunk is a job of its own, on whichever worker takes it.
        group(log_chunk.s(run.id, n) for n in pending).apply_async()
    return run.id


@shared_task(name="app.jobs.daily_log.log_pending_days")
def log_pending_days(trigger: str = "beat") -> list[int]:
    """Scheduled entry point: today plus any missed days (bounded)."""
    days = loader.dates_to_log(utcnow().date())
    return [_dispatch_day(d, trigger, None) for d in days]


@shared_task(name="app.jobs.daily_log.log_day")
def log_day(log_date_iso: str | None, trigger: str, job_id: str | None = None) -> list[int]:
    """API entry point: one given day, or today plus missed days when no day is given."""
    requested = date.fromisoformat(log_date_iso) if log_date_iso else None
    try:
        days = loader.dates_to_log(utcnow().date(), requested)
        run_ids = [_dispatch_day(d, trigger, job_id) for d in days]
    except Exception as exc:
        if job_id:
            job_service.mark_failed(job_id, f"{exc.__class__.__name__}: {exc}")
        raise
    if job_id:
        summary = {"run_ids": run_ids, "dates": [d.isoformat() for d in days]}
        if run_ids:
            job_service.mark_started(job_id, summary)
        else:  # every day asked for is logged already
            job_service.mark_succeeded(job_id, summary)
    return run_ids


@shared_task(
    name="app.jobs.daily_log.log_chunk",
    bind=True,
    max_retries=5,
    default_retry_delay=5,
)
def log_chunk(self: object, run_id: int, chunk_no: int) -> int | None:
    """Log one id range of a run; safe to run more than once."""
    try:
        return loader.run_chunk(run_id, chunk_no)
    except Exception as exc:
        retries = self.request.retries  # type: ignore[attr-defined]
        if retries >= self.max_retries:  # type: ignore[attr-defined]
            loader.fail_run(run_id, f"chunk {chunk_no}: {exc.__class__.__name__}: {exc}")
            raise
        log.warning("chunk %s/%s failed (%s), retry %d", run_id, chunk_no, exc, retries + 1)
        raise self.retry(exc=exc) from exc  # type: ignore[attr-defined]
