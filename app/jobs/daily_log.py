"""Celery jobs of the daily loader: plan the days, fan chunks out to workers."""

from __future__ import annotations

import logging
from datetime import date

from celery import group, shared_task
from flask import current_app

from app.models.enums import LoaderRunState
from app.models.task_log import LoaderRun
from app.models.types import utcnow
from app.repositories import loader as loader_repo
from app.services import jobs as job_service
from app.services import loader

log = logging.getLogger(__name__)


def _run_of_job(job_id: str, log_date: date) -> LoaderRun | None:
    """The run this job already started for the day, unless it failed. A job is redelivered when
    its worker died before acking it (acks_late), possibly half-way through queueing the chunks:
    the run it started is then completed, instead of a second run of the day superseding it (and
    the job reading as failed although its day gets logged)."""
    for run in loader_repo.runs_for_job(job_id):
        if run.log_date == log_date and run.state != LoaderRunState.FAILED:
            return run
    return None


def _queue_pending_chunks(run: LoaderRun) -> None:
    pending = loader.pending_chunks(run.id)
    if pending:
        # The distributed part: each chunk is a job of its own, on whichever worker takes it.
        # Queued through this Flask app's own Celery app (jobs run in its app context), not
        # whichever Celery app was created last in the process.
        celery_app = current_app.extensions["celery"]
        chunk = celery_app.tasks[log_chunk.name]
        group((chunk.s(run.id, n) for n in pending), app=celery_app).apply_async()


def _dispatch_day(log_date: date, trigger: str, job_id: str | None) -> int:
    run = _run_of_job(job_id, log_date) if job_id else None
    if run is None:
        run = loader.start_run(log_date, trigger, job_id)
    else:
        log.info("job %s: resuming loader run %s for %s", job_id, run.id, log_date)
    _queue_pending_chunks(run)
    return run.id


@shared_task(name="app.jobs.daily_log.log_pending_days")
def log_pending_days(trigger: str = "beat") -> list[int]:
    """Scheduled entry point: today plus any missed days (bounded). A day whose run is still
    making progress is left to it; a run that stalled gets its pending chunks queued again."""
    run_ids = []
    for day in loader.dates_to_log(utcnow().date()):
        running = loader.running_run(day)
        if running is None:
            run_ids.append(_dispatch_day(day, trigger, None))
        elif loader.is_stalled(running):
            log.warning(
                "loader run %s for %s stalled; queueing its pending chunks", running.id, day
            )
            _queue_pending_chunks(running)
            run_ids.append(running.id)
        else:
            log.info("loader run %s for %s is in progress; leaving it", running.id, day)
    return run_ids


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
