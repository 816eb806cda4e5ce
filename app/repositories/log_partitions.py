"""task_logger's monthly partitions on PostgreSQL (migration 0012): made before the rows that
need them, and dropped whole once they are older than the retention. SQLite keeps one table,
from which old days are deleted.

A partition is named after its month, `task_logger_yYYYYmMM`, and holds [1st, next 1st).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from sqlalchemy import delete, func, select, text

from app.extensions import db
from app.models.task_log import TaskLogEntry

PARENT = "task_logger"
PARTITION_NAME = re.compile(r"^task_logger_y(\d{4})m(\d{2})$")
# Taken (for the transaction) by whoever makes partitions: two loaders starting at once would
# otherwise both try to create the same month's.
_PARTITION_LOCK = 7_216_001


@dataclass(frozen=True)
class Partition:
    name: str
    first_day: date  # inclusive
    next_first_day: date  # exclusive: every day of the partition is before it
    rows: int | None  # the planner's estimate (pg_class.reltuples, no scan); None: not yet made


def compared_by_autogenerate(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic's `include_name`: autogenerate compares the models with the parent table only.
    The partitions are made at run time, not by the models, and are no difference to migrate."""
    return not (type_ == "table" and name is not None and PARTITION_NAME.match(name))


def month_of(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARENT}_y{month.year:04d}m{month.month:02d}"


def create_partition_sql(month: date, if_not_exists: bool = False) -> str:
    """The DDL of `month`'s partition."""
    return (
        f"CREATE TABLE {'IF NOT EXISTS ' if if_not_exists else ''}{partition_name(month)} "
        f"PARTITION OF {PARENT} "
        f"FOR VALUES FROM ('{month.isoformat()}') TO ('{next_month(month).isoformat()}')"
    )


def is_partitioned() -> bool:
    return db.engine.dialect.name == "postgresql"


def partitions() -> list[Partition]:
    """The partitions there are, oldest first (PostgreSQL)."""
    rows = db.session.execute(
        text(
            "SELECT c.relname, c.reltuples::bigint FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    ).all()
    found = []
    for name, rows_estimate in rows:
        match = PARTITION_NAME.match(name)
        if match is None:  # not one of ours: left alone
            continue
        month = date(int(match[1]), int(match[2]), 1)
        # -1 until the table is first vacuumed or analysed.
        estimate = int(rows_estimate) if rows_estimate >= 0 else None
        found.append(Partition(name, month, next_month(month), estimate))
    return sorted(found, key=lambda partition: partition.first_day)


def ensure_months(first_day: date, months: int) -> list[str]:
    """Make the partitions of `first_day`'s month and of the `months - 1` after it that do not
    exist yet; the names made. Nothing on SQLite. The caller commits, which also releases the
    lock taken for making them."""
    if not is_partitioned():
        return []
    wanted = [month_of(first_day)]
    while len(wanted) < months:
        wanted.append(next_month(wanted[-1]))
    if {partition_name(month) for month in wanted} <= {p.name for p in partitions()}:
        return []  # the common case: no lock, no DDL
    db.session.execute(select(func.pg_advisory_xact_lock(_PARTITION_LOCK)))
    existing = {p.name for p in partitions()}
    made = []
    for month in wanted:
        name = partition_name(month)
        if name in existing:
            continue
        db.session.execute(text(create_partition_sql(month)))
        made.append(name)
    return made


def drop_partitions_before(cutoff: date) -> list[Partition]:
    """Drop the partitions whose every day is before `cutoff`; those dropped. A partition that
    holds `cutoff` or a later day stays whole (PostgreSQL)."""
    doomed = [p for p in partitions() if p.next_first_day <= cutoff]
    for partition in doomed:
        db.session.execute(text(f"DROP TABLE {partition.name}"))
    return doomed


def days_before(cutoff: date) -> list[date]:
    """The days the log holds before `cutoff` (SQLite: one table, no partitions to name)."""
    stmt = select(TaskLogEntry.log_date).where(TaskLogEntry.log_date < cutoff).distinct()
    return list(db.session.scalars(stmt))


def delete_rows_before(cutoff: date) -> int:
    """Delete the log's rows of days before `cutoff`; how many (SQLite)."""
    deleted = db.session.execute(delete(TaskLogEntry).where(TaskLogEntry.log_date < cutoff))
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]
