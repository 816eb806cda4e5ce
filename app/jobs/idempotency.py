"""Celery job that keeps the idempotency keys' table small (scheduled hourly by beat)."""

from __future__ import annotations

from celery import shared_task

from app.models.types import utcnow
from app.services.idempotency import purge_expired_idempotency_keys


@shared_task(name="app.jobs.idempotency.purge_expired_keys")
def purge_expired_keys() -> int:
    return purge_expired_idempotency_keys(utcnow())
