"""Daily-log models: a task's log entries, loader runs and jobs."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from pydantic import Field

from app.models.enums import JobState, LoaderRunState
from app.schemas.common import Day, Output, PageMeta, StrictInput
from app.schemas.tasks import LogSnapshot


class LogSnapshotPage(PageMeta):
    items: list[LogSnapshot]


class LoaderRunOut(Output):
    id: int
    log_date: date
    state: LoaderRunState
    trigger: str
    job_id: str | None
    chunks_total: int
    chunks_done: int
    rows_eligible: int
    rows_logged: int
    rows_skipped: int
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class DailyLogJobIn(StrictInput):
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {"examples": [{"date": "2030-01-31"}]}

    date: Day | None = Field(
        default=None,
        description="The day to log; without it, today plus any missed days (catch-up)",
    )


class JobAccepted(Output):
    job_id: str
    state: JobState
    status_url: str


class JobProgress(Output):
    done: int
    total: int | None


class JobOut(Output):
    job_id: str
    kind: str
    state: JobState
    params: dict[str, Any]
    progress: JobProgress
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    runs: list[LoaderRunOut] = Field(description="Loader runs of a daily-log job")
