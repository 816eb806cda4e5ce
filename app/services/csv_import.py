"""CSV import of tasks: streaming parse, per-row validation, batched idempotent inserts.

The file is read row by row (memory stays flat in the file size) and written in batches, each
batch's tasks (INSERT ... ON CONFLICT (import_key) DO NOTHING) and their `created` audit entries
committed together, so each row is either fully imported or not at all. On PostgreSQL a batch is
COPied into a temporary table and inserted with its audit entries by one statement; elsewhere
by a batched INSERT ... RETURNING then the audit INSERT (see repositories/csv_import). A dry run
does the same inside one transaction that is rolled back.

Duplicate key (documented in the README): the task name (trimmed, case-folded), the `created_at`
day and the assigned username (case-folded). A row whose key was imported before, by any earlier
import or earlier in the same file, is skipped and counted in `skipped_duplicates`.

Unknown `assigned_user` names get an account that cannot log in: inactive, no password, and a
placeholder address `<username>@import.invalid`, until an admin activates it and sets a password
(and email) through `PATCH /admin/users/<id>`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import ValidationError

from app.extensions import db
from app.repositories import csv_import as import_repo
from app.schemas.csv_import import CsvTaskRow
from app.services.actor import Actor
from app.services.errors import InvalidInput, UnreadableInput

REQUIRED_COLUMNS = ("task_name", "status", "priority")
OPTIONAL_COLUMNS = ("description", "created_at", "assigned_user")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
MAX_REPORTED_ERRORS = 100
PLACEHOLDER_EMAIL_DOMAIN = "import.invalid"


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    skipped_duplicates: int = 0
    failed: int = 0
    users_created: int = 0
    dry_run: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add_error(self, row: int, column: str, message: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"row": row, "column": column, "message": message})

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "skipped_duplicates": self.skipped_duplicates,
            "failed": self.failed,
            "users_created": self.users_created,
            "dry_run": self.dry_run,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class ValidRow:
    number: int  # 1-based data row number (the header is row 0)
    row: CsvTaskRow

    @property
    def import_key(self) -> str:
        name = " ".join(self.row.task_name.split()).casefold()
        day = self.row.created_at.isoformat() if self.row.created_at else ""
        user = (self.row.assigned_user or "").casefold()
        return hashlib.sha256(f"{name}\x1f{day}\x1f{user}".encode()).hexdigest()


# --- reading --------------------------------------------------------------------------------


def _text_stream(binary: IO[bytes]) -> io.TextIOWrapper:
    """UTF-8 with or without a BOM; csv wants newline='' so quoted newlines and CRLF survive."""
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="", errors="strict")


def read_rows(binary: IO[bytes]) -> Generator[tuple[int, dict[str, str]], None, None]:
    """Check the header, then yield (row number, {column: value}) for each non-blank row.
    Undecodable or non-CSV input raises UnreadableInput; header problems InvalidInput."""
    text = _text_stream(binary)
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise UnreadableInput("the file is empty")
        columns = [name.strip().lower() for name in header]
        _check_header(columns)
        for number, values in enumerate(reader, start=1):
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) != len(columns):
                yield number, {"__width__": f"{len(columns)}:{len(values)}"}
                continue
            yield number, dict(zip(columns, values, strict=True))
    except UnicodeDecodeError as exc:
        raise UnreadableInput("the file is not UTF-8 text") from exc
    except csv.Error as exc:
        raise UnreadableInput(f"not a valid CSV file: {exc}") from exc
    finally:
        text.detach()  # leave the caller's binary stream open


def _check_header(columns: list[str]) -> None:
    if any("\x00" in c for c in columns):
        raise UnreadableInput("not a CSV file")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    errors: dict[str, list[str]] = {}
    if missing:
        errors["missing_columns"] = missing
    if unknown:
        errors["unknown_columns"] = unknown
    if duplicated:
        errors["duplicated_columns"] = duplicated
    if errors:
        parts = [f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in errors.items()]
        raise InvalidInput("bad CSV header; " + "; ".join(parts), errors=errors, location="file")


def check_header(binary: IO[bytes]) -> None:
    """Raise as import_tasks would for an unreadable file or a bad header, judging by the start
    of the file only (before a large file is queued as a job); rewinds the stream."""
    rows = read_rows(binary)
    try:
        next(rows, None)
    finally:
        rows.close()
    binary.seek(0)


def count_rows(binary: IO[bytes]) -> int:
    """Data rows in the file (a quick pass for progress totals); rewinds the stream."""
    total = sum(1 for _ in read_rows(binary))
    binary.seek(0)
    return total


def validate(number: int, values: dict[str, str], report: ImportReport) -> ValidRow | None:
    if "__width__" in values:
        expected, got = values["__width__"].split(":")
        report.failed += 1
        report.add_error(number, "", f"expected {expected} fields as in the header, got {got}")
        return None
    try:
        return ValidRow(number, CsvTaskRow.model_validate(values))
    except ValidationError as exc:
        report.failed += 1
        for error in exc.errors():
            column = str(error["loc"][0]) if error["loc"] else ""
            report.add_error(number, column, error["msg"].removeprefix("Value error, "))
        return None


# --- writing --------------------------------------------------------------------------------


def _batches(rows: Iterable[ValidRow], size: int) -> Iterator[list[ValidRow]]:
    batch: list[ValidRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _resolve_users(
    batch: list[ValidRow], report: ImportReport, known: dict[str, int]
) -> dict[str, int]:
    """Ids of the batch's assignees, creating placeholder accounts for unknown ones; `known`
    carries the names resolved by earlier batches of the import."""
    names = {r.row.assigned_user for r in batch if r.row.assigned_user} - known.keys()
    if not names:
        return known
    known.update(import_repo.user_ids_by_username(names))
    unknown = sorted(names - known.keys())
    if unknown:
        report.users_created += import_repo.create_placeholder_users(
            unknown, PLACEHOLDER_EMAIL_DOMAIN
        )
        known.update(import_repo.user_ids_by_username(set(unknown)))
    return known


def _write_batch(
    batch: list[ValidRow], actor: Actor, report: ImportReport, known_users: dict[str, int]
) -> None:
    user_ids = _resolve_users(batch, report, known_users)
    now = datetime.now(UTC)
    rows = []
    for item in batch:
        r = item.row
        if r.assigned_user and r.assigned_user not in user_ids:
            report.failed += 1
            report.add_error(item.number, "assigned_user", "could not create this user")
            continue
        created_at = (
            datetime(r.created_at.year, r.created_at.month, r.created_at.day, tzinfo=UTC)
            if r.created_at
            else now
        )
        rows.append(
            {
                "task_name": r.task_name,
                "description": r.description,
                "status": r.status,
                "priority": r.priority,
                "assigned_user_id": user_ids[r.assigned_user] if r.assigned_user else None,
                "created_at": created_at,
                "import_key": item.import_key,
            }
        )
    created = import_repo.insert_tasks_with_audit(rows, actor.id, now)
    report.created += created
    report.skipped_duplicates += len(rows) - created


def import_tasks(
    binary: IO[bytes],
    actor: Actor,
    *,
    dry_run: bool = False,
    batch_size: int = 2000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import a CSV file of tasks as `actor`. Returns the report. Raises InvalidInput (422, bad
    header) before anything is written, and UnreadableInput (400) where the file stops being
    readable: batches before that point are committed (not in a dry run), so callers make one
    reading pass first (count_rows) to refuse such a file whole."""
    report = ImportReport(dry_run=dry_run)

    def valid_rows() -> Iterator[ValidRow]:
        for number, values in read_rows(binary):
            report.rows += 1
            item = validate(number, values, report)
            if item is not None:
                yield item

    known_users: dict[str, int] = {}
    try:
        for batch in _batches(valid_rows(), batch_size):
            _write_batch(batch, actor, report, known_users)
            if not dry_run:
                db.session.commit()
            if on_progress is not None:
                on_progress(report.rows)
    except Exception:
        db.session.rollback()
        raise
    if dry_run:
        db.session.rollback()
    return report
