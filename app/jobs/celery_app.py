"""The Celery app, built from the Flask app so worker, beat and web share one configuration."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from celery import Celery, Task
from celery._state import get_current_task
from celery.exceptions import WorkerShutdown
from celery.schedules import crontab
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_process_init,
    worker_ready,
)
from celery.utils.log import get_multiprocessing_logger
from flask import Flask
from kombu.transport import virtual

from app.config import Settings
from app.extensions import db
from app.observability.logging import formatter

DAILY_LOG_JOB = "app.jobs.daily_log.log_pending_days"
PRUNE_LOG_JOB = "app.jobs.log_retention.prune_task_log"
PURGE_IDEMPOTENCY_KEYS_JOB = "app.jobs.idempotency.purge_expired_keys"
REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "sentinel://")


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Redis only: the SQLAlchemy (embedded) transport passes every transport option on to
    `create_engine()`, which refuses keywords it does not know."""
    if not settings.celery_broker.startswith(REDIS_SCHEMES):
        return {}
    timeout = settings.celery_visibility_timeout_seconds
    return {
        # A job taken by a worker that died before acking it goes back to its queue once it has
        # been unacked this long (a live worker's slow job is redelivered too: keep it long).
        "visibility_timeout": timeout,
        # How often workers look for such jobs: about every 100 s for the default hour (kombu's
        # own default), more often for a short timeout, so that it is actually honoured.
        "unacked_restore_interval": min(100, max(1, timeout // 10)),
        "unacked_restore_throttle": 1,
    }


def beat_schedule(settings: Settings) -> dict[str, Any]:
    hour, minute = (int(part) for part in settings.daily_log_time_utc.split(":"))
    schedule: dict[str, Any] = {
        "daily-task-log": {
            "task": DAILY_LOG_JOB,
            "schedule": crontab(hour=hour, minute=minute),
            "kwargs": {"trigger": "beat"},
        },
        # Cheap when nothing is due (one query): catches up soon after beat or the worker
        # was down across the daily slot, without waiting for the next day.
        "daily-task-log-catch-up": {
            "task": DAILY_LOG_JOB,
            "schedule": crontab(minute=f"*/{settings.loader_catchup_check_minutes}"),
            "kwargs": {"trigger": "catch-up"},
        },
    }
    schedule["purge-idempotency-keys"] = {
        "task": PURGE_IDEMPOTENCY_KEYS_JOB,
        "schedule": crontab(minute=minute),  # hourly: one indexed DELETE of the expired keys
    }
    if settings.log_retention_days:  # off by default: nothing is deleted unless asked
        schedule["prune-task-log"] = {
            "task": PRUNE_LOG_JOB,
            "schedule": crontab(hour=(hour + 12) % 24, minute=minute),  # away from the load
            "kwargs": {"older_than_days": settings.log_retention_days},
        }
    return schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.celery_broker,
        "broker_connection_retry_on_startup": True,
        "timezone": "UTC",
        "enable_utc": True,
        # Job state lives in our own tables (jobs, loader_runs): no result backend needed.
        "task_ignore_result": True,
        # A job is acknowledged only when done, and redelivered if its worker dies mid-way;
        # every job is idempotent, so running one twice is harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_always_eager": settings.celery_always_eager,
        "task_eager_propagates": True,
        "broker_transport_options": broker_transport_options(settings),
        "beat_schedule": beat_schedule(settings),
        "beat_schedule_filename": settings.celery_beat_schedule,
    }


def stop_promptly_between_polls() -> None:
    """SIGTERM stops a worker on the embedded broker at once when it comes between two polls.

    On a transport that cannot wait for messages (the embedded SQLAlchemy broker), the worker
    polls: Celery's SIGTERM handler only sets a flag, which its loop reads between rounds of
    2 s and then runs one more round, so a warm shutdown began 2 to 5 s after the signal. While
    the worker sleeps between two polls it holds no message of the broker's, so there the
    shutdown may start at once: the signal raises Celery's own WorkerShutdown, as its loop would.
    Anywhere else (a poll running) Celery's flag takes its usual course. Jobs running still finish.
    """
    celery_handler = signal.getsignal(signal.SIGTERM)
    if not callable(celery_handler):
        return
    polling = virtual.Transport.drain_events.__code__

    def handler(signum: int, frame: FrameType | None) -> None:
        celery_handler(signum, frame)
        if frame is not None and frame.f_code is polling:
            raise WorkerShutdown(0)

    signal.signal(signal.SIGTERM, handler)


class _CeleryTaskFilter(logging.Filter):
    """Adds the running Celery job's id and name to each log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = get_current_task()
        if task is not None and task.request.id:
            record.celery_job_id = task.request.id
            record.celery_job = task.name
        return True


def init_celery(app: Flask, settings: Settings) -> Celery:
    """Celery app whose every job runs inside a Flask app context."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, task_cls=FlaskTask)
    celery.config_from_object(celery_config(settings))
    # Register the job modules' shared tasks (worker and web process alike).
    from app.jobs import csv_import, daily_log, idempotency, log_retention  # noqa: F401

    celery.set_default()
    app.extensions["celery"] = celery

    @after_setup_logger.connect(weak=False)
    @after_setup_task_logger.connect(weak=False)
    def _app_format_logs(logger: logging.Logger, **_: Any) -> None:
        # Worker and beat log in the app's format (LOG_FORMAT), job ids included.
        # Pool-process events (a child killed, out of memory) go to the multiprocessing
        # logger, which has handlers of its own.
        for target in (logger, get_multiprocessing_logger()):
            for handler in target.handlers:
                handler.setFormatter(formatter(settings.log_format))
                handler.addFilter(_CeleryTaskFilter())

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        stop_promptly_between_polls()  # Celery's signal handlers are in place by now

    @worker_process_init.connect(weak=False)
    def _reset_pool_after_fork(**_: Any) -> None:
        # Connections inherited from the parent process must not be shared with it.
        with app.app_context():
            db.engine.dispose(close=False)

    return celery
