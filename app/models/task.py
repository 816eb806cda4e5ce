"""Tasks (`task_manager`) and their audit trail (`task_audit`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Computed,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.enums import PRIORITY_ORDER, AuditAction, TaskPriority, TaskStatus
from app.models.types import UTCDateTime, utcnow
from app.models.user import User


def string_enum(enum_cls: type, name: str) -> Enum:
    return Enum(
        enum_cls,
        native_enum=False,
        create_constraint=True,
        length=16,
        name=name,
        values_callable=lambda e: [m.value for m in e],
    )


# The list's equality filters that lead an index of their own (app.repositories.tasks pages).
LIST_FILTER_INDEX_KEYS: tuple[tuple[str, ...], ...] = (
    ("status",),
    ("priority",),
    ("status", "priority"),
)

# The list's orders, other than id and created_at, each led by an index of its own over all
# tasks (with id after it). ("status", "id") serves the live status filter in id order as well.
SORT_INDEX_KEYS = ("task_name", "updated_at", "status", "priority_rank")
SORT_INDEXES = frozenset((name, "id") for name in SORT_INDEX_KEYS)

# A priority's rank, LOW < MEDIUM < HIGH < CRITICAL: the list's `priority` order (not the
# names' alphabetical one). Stored by the database (migration 0009) so that an index gives it.
PRIORITY_RANK_SQL = (
    "CASE priority "
    + " ".join(f"WHEN '{p.value}' THEN {rank}" for rank, p in enumerate(PRIORITY_ORDER))
    + " ELSE NULL END"  # as PostgreSQL states it back: the models and the migrations agree
)


class Task(Model):
    __tablename__ = "task_manager"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[TaskStatus] = mapped_column(
        string_enum(TaskStatus, "task_status"), default=TaskStatus.ACTIVE
    )
    priority: Mapped[TaskPriority] = mapped_column(
        string_enum(TaskPriority, "task_priority"), default=TaskPriority.MEDIUM
    )
    # Both indexed with created_at below.
    assigned_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_date: Mapped[date | None] = mapped_column(Date)  # indexed with id below
    # Incremented by every UPDATE (optimistic locking): the task's ETag, and a concurrent write
    # that read an older version fails instead of overwriting (StaleDataError).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Set for tasks created by a CSV import: the row's duplicate key (see services/csv_import),
    # unique so a re-import skips rows already imported (NULLs, i.e. other tasks, never clash).
    import_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Read-only: computed by the database from `priority` (GENERATED ALWAYS AS ... STORED).
    priority_rank: Mapped[int] = mapped_column(
        SmallInteger, Computed(PRIORITY_RANK_SQL, persisted=True)
    )

    assigned_user: Mapped[User | None] = relationship(
        foreign_keys=[assigned_user_id], lazy="select"
    )
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id], lazy="select")
    # The database cascades a purge to audit (and log) rows; passive_deletes lets it do the work.
    audit_entries: Mapped[list[TaskAuditEntry]] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True, lazy="select"
    )

    __mapper_args__ = {"version_id_col": version}

    __table_args__ = (
        # A user's tasks (assigned to them, or created by them and not assigned to them) in the
        # list's default order, each set one range that a page stops in; live ones told apart on
        # the index. They also serve the foreign keys' look-ups and the assigned_user filter.
        Index(
            "ix_task_manager_assigned_user_id_created_at_id",
            "assigned_user_id",
            "created_at",
            "id",
            postgresql_include=["deleted_at"],
        ),
        Index(
            "ix_task_manager_created_by_id_created_at_id",
            "created_by_id",
            "created_at",
            "id",
            postgresql_include=["deleted_at", "assigned_user_id"],
        ),
        # A list page's ids read from the index alone, OFFSET included (task_rows_page): live tasks
        # in either order the list is sorted by, with the columns it filters on.
        *(
            Index(
                f"ix_task_manager_live_{'_'.join(columns)}",
                *columns,
                postgresql_include=["status", "priority"],
                postgresql_where=text("deleted_at IS NULL"),
                sqlite_where=text("deleted_at IS NULL"),
            )
            for columns in (("created_at", "id"), ("id",))
        ),
        # A filtered page walks only the matching entries: the filters lead, the order follows
        # (without them a page of one status and priority walks 5x the entries it keeps, 25,000
        # for page 250 of 100,000 tasks). They also serve the filtered counts.
        *(
            Index(
                f"ix_task_manager_live_{'_'.join(filters + order)}",
                *filters,
                *order,
                postgresql_where=text("deleted_at IS NULL"),
                sqlite_where=text("deleted_at IS NULL"),
            )
            for filters in LIST_FILTER_INDEX_KEYS
            for order in (("created_at", "id"), ("id",))
            if filters + order not in SORT_INDEXES
        ),
        # The list's other orders (SORTABLE_COLUMNS), ties broken by id: a page walks the index and
        # stops after OFFSET + LIMIT entries instead of sorting every task. Not partial, so they
        # serve the admins' deleted=include too; a list of live tasks skips the few deleted ones
        # on the included deleted_at, so that its ids are still read from the index alone.
        # Read backward, (X, id) gives `-X` (X DESC, id DESC); `X` (X ASC, id DESC) is read
        # forward, each run of equal X re-sorted by id (an incremental sort of a few entries).
        *(
            Index(f"ix_task_manager_{name}_id", name, "id", postgresql_include=["deleted_at"])
            for name in SORT_INDEX_KEYS
        ),
        # status and priority: a few values in runs of millions, which an incremental sort would
        # sort whole, so ascending (ties by id descending) has an index in that direction.
        *(
            Index(
                f"ix_task_manager_{name}_id_desc",
                name,
                column("id").desc(),
                postgresql_include=["deleted_at"],
            )
            for name in ("status", "priority_rank")
        ),
        # due_date, tasks without one last (PostgreSQL's NULLS LAST when ascending); and the
        # due_from / due_to ranges.
        Index(
            "ix_task_manager_due_date_id",
            "due_date",
            column("id").desc(),
            postgresql_include=["deleted_at"],
        ),
        # Descending, tasks without a due date last too (the index above read backward would put
        # them first). PostgreSQL only: SQLite's CREATE INDEX has no NULLS LAST.
        Index(
            "ix_task_manager_due_date_desc_id",
            column("due_date").desc().nulls_last(),
            column("id").desc(),
            postgresql_include=["deleted_at"],
        ).ddl_if(dialect="postgresql"),
        # The search (`q`, a case-insensitive substring of the name or the description): one
        # trigram index each, ORed in a BitmapOr. All tasks: admins search the deleted ones too.
        *(
            Index(
                f"ix_task_manager_{name}_trgm",
                name,
                postgresql_using="gin",
                postgresql_ops={name: "gin_trgm_ops"},
            ).ddl_if(dialect="postgresql")
            for name in ("task_name", "description")
        ),
        # The few soft-deleted tasks: the date view reads their ids from it, once per page, to
        # leave them out of the log entries it walks (app.repositories.task_logs).
        Index(
            "ix_task_manager_deleted_id",
            "id",
            postgresql_where=text("deleted_at IS NOT NULL"),
            sqlite_where=text("deleted_at IS NOT NULL"),
        ),
    )

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.task_name!r}>"


class TaskAuditEntry(Model):
    """One change to a task: who, when, what, and each changed field's old and new value."""

    __tablename__ = "task_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("task_manager.id", ondelete="CASCADE"), index=True
    )
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[AuditAction] = mapped_column(string_enum(AuditAction, "audit_action"))
    # {"field": {"old": ..., "new": ...}} with JSON-ready values.
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    task: Mapped[Task] = relationship(back_populates="audit_entries", lazy="select")
    actor: Mapped[User | None] = relationship(lazy="select")
