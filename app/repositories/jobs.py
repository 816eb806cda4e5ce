"""Persistence of background-job records."""

from __future__ import annotations

from app.extensions import db
from app.models.job import Job


def add_job(job: Job) -> None:
    db.session.add(job)


def get_job(job_id: str) -> Job | None:
    return db.session.get(Job, job_id)
