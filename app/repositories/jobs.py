"""Persistence of background-job records."""

from __future__ import annotations

from sqlalchemy import update

from app.extensions import db
from app.models.job import Job


def add_job(job: Job) -> None:
    db.session.add(job)


def get_job(job_id: str) -> Job | None:
    return db.session.get(Job, job_id)


def record_progress(job_id: str, done: int, total: int | None) -> None:
    """Progress in a transaction of its own, visible at once whatever the job's own session
    does (a dry run rolls its work back)."""
    with db.engine.begin() as conn:
        conn.execute(
            update(Job).where(Job.id == job_id).values(progress_done=done, progress_total=total)
        )
