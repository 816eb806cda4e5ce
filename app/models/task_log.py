"""The daily task log (`task_logger`), loader runs and their chunks."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.enums import LoaderRunState, TaskPriority, TaskStatus
from app.models.task import Task, string_enum
from app.models.types import UTCDateTime, utcnow

# BIGINT on PostgreSQL (millions of rows a day add up); SQLite needs INTEGER for its rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class TaskLogEntry(Model):
    """A snapshot of one active task on one day; at most one per (task, day)."""

    __tablename__ = "task_logger"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task_manager.id", ondelete="CASCADE"))
    log_date: Mapped[date] = mapped_column(Date)  # leads the indexes below
    status: Mapped[TaskStatus] = mapped_column(string_enum(TaskStatus, "task_log_status"))
    priority: Mapped[TaskPriority] = mapped_column(string_enum(TaskPriority, "task_log_priority"))
    # A snapshot, not a reference: it keeps the value it had on that day.
    assigned_user_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A copy of the task's created_at (which never changes once the task exists): the date
    # view's default order, so a page of a big day is read from this table's index alone.
    task_created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    task: Mapped[Task] = relationship(lazy="select")

    @property
    def log_id(self) -> int:
        return self.id

    @property
    def logged_at(self) -> datetime:
        return self.created_at

    __table_args__ = (
        # The loader's conflict target, and the per-task history index (task_id first).
        UniqueConstraint("task_id", "log_date", name="uq_task_logger_task_id_log_date"),
        # The date view: one day in the task list's order (created_at, then id), walked in
        # either direction, so a page stops after OFFSET + LIMIT entries instead of sorting
        # the whole day.
        Index(
            "ix_task_logger_log_date_task_created_at_task_id",
            "log_date",
            "task_created_at",
            "task_id",
        ),
        # The date view of one assignee's entries of a day (or the unassigned ones), in that
        # order: `assigned_user` filters the day's snapshot, and the page of an assignee with few
        # tasks would otherwise walk the whole day to find them.
        Index(
            "ix_task_logger_log_date_assigned_user_id",
            "log_date",
            "assigned_user_id",
            "task_created_at",
            "task_id",
        ),
    )


class LoaderRun(Model):
    """One run of the daily loader for one log date."""

    __tablename__ = "loader_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    log_date: Mapped[date] = mapped_column(Date, index=True)
    state: Mapped[LoaderRunState] = mapped_column(
        string_enum(LoaderRunState, "loader_run_state"), default=LoaderRunState.RUNNING, index=True
    )
    trigger: Mapped[str] = mapped_column(String(16))  # beat, cli, api
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    rows_eligible: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_logged: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoaderChunk(Model):
    """One id range of a run. Done chunks are never redone, so a redelivered or re-run chunk
    adds nothing and counts nothing twice."""

    __tablename__ = "loader_chunks"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("loader_runs.id", ondelete="CASCADE"), primary_key=True
    )
    chunk_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_task_id: Mapped[int] = mapped_column(BigInteger)
    last_task_id: Mapped[int] = mapped_column(BigInteger)
    rows_logged: Mapped[int | None] = mapped_column(BigInteger)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
