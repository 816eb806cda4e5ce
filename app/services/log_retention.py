"""Retention of the daily task log: the days older than a cut-off removed, whole months at a
time on PostgreSQL (a partition dropped: no rows deleted one by one), row by row on SQLite."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

from app.cache.invalidation import invalidate_on_commit
from app.cache.store import date_generation
from app.extensions import db
from app.repositories import log_partitions

log = logging.getLogger(__name__)

# How many months of partitions the loader keeps made: its day's month and the next one, so the
# 1st of a month (or of a year) never waits for DDL, nor fails for want of a partition.
MONTHS_AHEAD = 2


@dataclass
class PruneReport:
    cutoff: date
    partitions: list[log_partitions.Partition] = field(default_factory=list)
    rows_deleted: int = 0  # SQLite: the rows; PostgreSQL: the dropped partitions' estimates

    def lines(self) -> list[str]:
        if not self.partitions and not self.rows_deleted:
            return [f"nothing logged before {self.cutoff}: nothing removed"]
        removed = [
            f"dropped {p.name} ({p.first_day} to {p.next_first_day - timedelta(days=1)}, "
            + (f"about {p.rows:,} rows)" if p.rows is not None else "rows not yet estimated)")
            for p in self.partitions
        ]
        if not self.partitions:
            removed.append(f"deleted {self.rows_deleted:,} rows logged before {self.cutoff}")
        return removed


def ensure_partitions(log_date: date) -> list[str]:
    """Make the log's partitions for `log_date`'s month and the next one, where missing."""
    made = log_partitions.ensure_months(log_date, MONTHS_AHEAD)
    db.session.commit()
    for name in made:
        log.info("task log partition %s created", name)
    return made


def prune(older_than: timedelta, today: date) -> PruneReport:
    """Remove the log's days before `today - older_than`. On PostgreSQL only whole months go: a
    month that holds the cut-off or a later day stays until all of its days are older. Safe
    at any time: a loader logging today writes to this month's partition, never a dropped one."""
    report = PruneReport(cutoff=today - older_than)
    if log_partitions.is_partitioned():
        report.partitions = log_partitions.drop_partitions_before(report.cutoff)
        report.rows_deleted = sum(p.rows or 0 for p in report.partitions)
        days = [
            p.first_day + timedelta(days=n)
            for p in report.partitions
            for n in range((p.next_first_day - p.first_day).days)
        ]
    else:
        days = log_partitions.days_before(report.cutoff)
        report.rows_deleted = log_partitions.delete_rows_before(report.cutoff)
    # The date view's cached answers of those days are stale once this commits.
    invalidate_on_commit(date_generation(day.isoformat()) for day in days)
    db.session.commit()
    for line in report.lines():
        log.info("task log prune: %s", line)
    return report
