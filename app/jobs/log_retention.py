"""Celery job of the task log's retention (scheduled by beat when LOG_RETENTION_DAYS is set)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from app.models.types import utcnow
from app.services import log_retention


@shared_task(name="app.jobs.log_retention.prune_task_log")
def prune_task_log(older_than_days: int) -> list[str]:
    report = log_retention.prune(timedelta(days=older_than_days), utcnow().date())
    return report.lines()
