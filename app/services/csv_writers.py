"""Where the CSV import's task rows are written: on the import's own session, or on several
database connections at once.

`SessionWriter` writes each batch on the caller's session, committing it unless it is a dry run
(whose batches then share one transaction, rolled back at the end).

`ParallelWriters` spreads the rows over N writers, each a thread with a connection of its own
(an app context of its own) that writes its batches in order and commits each one. A row goes
to the writer its import key names, so the duplicates of one key always reach one writer in file
order: the first of them is the one inserted, as on one connection, and two writers never wait
on each other's keys. At most two batches a writer are in flight, so memory stays flat in the
file size. The caller commits what its rows refer to (the assignees' placeholder accounts)
before handing them over: the writers' connections see only committed rows.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from flask import current_app

from app.extensions import db
from app.repositories import csv_import as import_repo

IN_FLIGHT_PER_WRITER = 2


class SessionWriter:
    """Batches written on the caller's session."""

    def __init__(self, actor_id: int, *, commit: bool) -> None:
        self.actor_id = actor_id
        self.commit = commit
        self.written = 0  # rows handed to the database, duplicates included
        self.created = 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.created += import_repo.insert_tasks_with_audit(rows, self.actor_id, datetime.now(UTC))
        self.written += len(rows)
        if self.commit:
            db.session.commit()

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class ParallelWriters:
    """Batches written on `count` connections at once, each row routed by its import key."""

    def __init__(self, count: int, actor_id: int, batch_size: int) -> None:
        self.actor_id = actor_id
        self.batch_size = batch_size
        self.written = 0
        self.created = 0
        self._app = current_app._get_current_object()  # type: ignore[attr-defined]
        self._pools = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"csv-writer-{n}")
            for n in range(count)
        ]
        self._pending: list[list[dict[str, Any]]] = [[] for _ in range(count)]
        self._in_flight: deque[tuple[Future[int], int]] = deque()

    def write(self, rows: list[dict[str, Any]]) -> None:
        db.session.commit()  # the placeholder accounts the rows may name
        for row in rows:
            writer = int(row["import_key"][:8], 16) % len(self._pools)
            self._pending[writer].append(row)
            if len(self._pending[writer]) >= self.batch_size:
                self._submit(writer)

    def _submit(self, writer: int) -> None:
        rows, self._pending[writer] = self._pending[writer], []
        self._in_flight.append((self._pools[writer].submit(self._write, rows), len(rows)))
        while len(self._in_flight) > IN_FLIGHT_PER_WRITER * len(self._pools):
            self._collect_oldest()

    def _collect_oldest(self) -> None:
        future, rows = self._in_flight.popleft()
        self.created += future.result()  # a writer's failure is raised here, in the caller
        self.written += rows

    def _write(self, rows: list[dict[str, Any]]) -> int:
        with self._app.app_context():  # a session, and so a connection, of this thread's own
            try:
                created = import_repo.insert_tasks_with_audit(
                    rows, self.actor_id, datetime.now(UTC)
                )
                db.session.commit()
            except BaseException:
                db.session.rollback()
                raise
            return created

    def __enter__(self) -> ParallelWriters:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                for writer, pending in enumerate(self._pending):
                    if pending:
                        self._submit(writer)
                while self._in_flight:
                    self._collect_oldest()
        finally:
            # On a failure, the batches not started are dropped; those running finish (each
            # commits or rolls back whole) before the failure reaches the caller.
            for pool in self._pools:
                pool.shutdown(wait=True, cancel_futures=True)
