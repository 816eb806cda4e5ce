"""CSV import of tasks: streaming parse, per-row validation, batched idempotent inserts.

The file is read row by row (memory stays flat in the file size) and written in batches, each
batch's tasks (INSERT ... ON CONFLICT (import_key) DO NOTHING) and their `created` audit entries
committed together, so each row is either fully imported or not at all. On PostgreSQL a batch is
COPied into a temporary table and inserted with its audit entries by one statement; elsewhere
by a batched INSERT ... RETURNING then the audit INSERT (see repositories/csv_import). A dry run
does the same inside one transaction that is rolled back.

Every import first makes one reading pass (count_rows_within_cap) and refuses the whole file,
before anything is written, when it stops being readable (UnreadableInput, 400) or has more than
CSV_MAX_ROWS_PER_FILE data rows (InvalidInput, 422; blank lines are not rows). The pass stops
at the first row over the cap.

Duplicate key (documented in the README): the task name (trimmed, case-folded), the `created_at`
day and the assigned username (case-folded). A row whose key was imported before, by any earlier
import or earlier in the same file, is skipped and counted in `skipped_duplicates`.

Assignees are matched by username, case-insensitively, under one rule: an `assigned_user` name
matches an existing account only if that account existed when the file was uploaded (its
`users.created_at` is not later than the upload's time: the request's for a file imported at
once, the job's `created_at` for a file imported by a background job, the command's start for
`flask import-csv`). A name held by an account registered after the upload is not matched: its
rows fail ("assignee account was created after the upload") and create nothing, so whoever
registers `john_doe` between an upload and its job's run never receives john_doe's tasks.
Usernames never change, so the account holding a name at the upload is the one matched later.
One exception: an account created after the upload that is still an import's placeholder
(inactive, no password: nobody can log in to it, and registering always sets a password) is
reused as this import would have made it, taking one of the file's new accounts below. That is
what keeps a job that a dying worker left half done safe to run again: its second run finds the
placeholders its first run made.

Unknown `assigned_user` names get an account that cannot log in: inactive, no password, and a
placeholder address `<username>@import.invalid`, until an admin activates it and sets a password
(and email) through `PATCH /admin/users/<id>`. A file makes at most CSV_MAX_NEW_ACCOUNTS_PER_FILE
of them, for its first unknown names in file order; a row naming another unknown assignee fails
with a row error (counted in `failed`) and creates nothing. A dry run reports the same.
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
from app.models.types import utcnow
from app.repositories import csv_import as import_repo
from app.repositories.csv_import import ExistingAccount
from app.schemas.csv_import import CsvTaskRow
from app.services.actor import Actor
from app.services.context import settings
from app.services.csv_writers import ParallelWriters, SessionWriter
from app.services.errors import InvalidInput, UnreadableInput

REQUIRED_COLUMNS = ("task_name", "status", "priority")
OPTIONAL_COLUMNS = ("description", "created_at", "assigned_user")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
MAX_REPORTED_ERRORS = 100
PLACEHOLDER_EMAIL_DOMAIN = "import.invalid"
# Row errors of the assignee rule and the new-accounts cap.
CREATED_AFTER_UPLOAD = "assignee account was created after the upload"
OVER_ACCOUNT_CAP = (
    "this file may create at most {limit} accounts for unknown assignees; create this one "
    "first or import its rows in another file"
)
COULD_NOT_CREATE = "could not create this user"


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    skipped_duplicates: int = 0
    failed: int = 0
    users_created: int = 0
    dry_run: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add_error(self, line: int, column: str, message: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": line, "column": column, "message": message})

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
    line: int  # the file's line where the row starts (the header is line 1)
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
    """Check the header, then yield (line, {column: value}) for each non-blank row, `line` being
    the file's line number where the row starts (the header's first line is 1; a quoted value
    may span lines). Undecodable or non-CSV input raises UnreadableInput; header problems
    InvalidInput."""
    text = _text_stream(binary)
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise UnreadableInput("the file is empty")
        columns = [name.strip().lower() for name in header]
        _check_header(columns)
        next_line = reader.line_num + 1  # where the next row starts
        for values in reader:
            line, next_line = next_line, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) != len(columns):
                yield line, {"__width__": f"{len(columns)}:{len(values)}"}
                continue
            yield line, dict(zip(columns, values, strict=True))
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


def count_rows_within_cap(binary: IO[bytes]) -> int:
    """The reading pass every import makes before writing anything: the file's data rows, for
    progress totals. Refuses the whole file: UnreadableInput where it stops being readable, far
    down included, and InvalidInput past CSV_MAX_ROWS_PER_FILE data rows (counting stops
    there). Rewinds the stream."""
    limit = settings().csv_max_rows_per_file
    total = 0
    rows = read_rows(binary)
    try:
        for _ in rows:
            total += 1
            if total > limit:
                raise _too_many_rows(limit)
    finally:
        rows.close()
        binary.seek(0)
    return total


def _too_many_rows(limit: int) -> InvalidInput:
    return InvalidInput(
        f"the file has more than {limit} data rows, the limit per file; nothing was imported",
        errors={"rows": [f"at most {limit} data rows per file"]},
        location="file",
    )


def validate(line: int, values: dict[str, str], report: ImportReport) -> ValidRow | None:
    if "__width__" in values:
        expected, got = values["__width__"].split(":")
        report.failed += 1
        report.add_error(line, "", f"expected {expected} fields as in the header, got {got}")
        return None
    try:
        return ValidRow(line, CsvTaskRow.model_validate(values))
    except ValidationError as exc:
        report.failed += 1
        for error in exc.errors():
            column = str(error["loc"][0]) if error["loc"] else ""
            report.add_error(line, column, error["msg"].removeprefix("Value error, "))
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


class Assignees:
    """What each `assigned_user` name of one import stands for: an account id, or the error of
    the rows naming it. Carried across the import's batches, so that each name is settled once
    and the file's new accounts are counted against its cap (see the module docstring)."""

    def __init__(self, uploaded_at: datetime, max_new_accounts: int) -> None:
        self.uploaded_at = uploaded_at
        self.max_new_accounts = max_new_accounts
        self.new_accounts = 0  # placeholders made, or reused, for the file's unknown names
        self.ids: dict[str, int] = {}
        self.refused: dict[str, str] = {}

    def settle(self, names: Iterable[str], report: ImportReport) -> None:
        """Settle the names not settled yet; unknown ones get placeholders within the cap, in
        file order."""
        pending = [n for n in dict.fromkeys(names) if n not in self.ids and n not in self.refused]
        if not pending:
            return
        found = import_repo.accounts_by_username(pending)
        unknown = []
        for name in pending:
            account = found.get(name)
            if account is not None and self._existed_at_upload(account):
                self.ids[name] = account.id
            elif account is None or account.is_placeholder:
                unknown.append(name)  # a placeholder made since is reused as if made here
            else:
                self.refused[name] = CREATED_AFTER_UPLOAD
        room = max(self.max_new_accounts - self.new_accounts, 0)
        within, beyond = unknown[:room], unknown[room:]
        self.new_accounts += len(within)
        self.ids.update({name: found[name].id for name in within if name in found})
        self._make_placeholders([name for name in within if name not in found], report)
        for name in beyond:
            self.refused[name] = OVER_ACCOUNT_CAP.format(limit=self.max_new_accounts)

    def _existed_at_upload(self, account: ExistingAccount) -> bool:
        return account.created_at <= self.uploaded_at

    def _make_placeholders(self, names: list[str], report: ImportReport) -> None:
        made = import_repo.create_placeholder_users(names, PLACEHOLDER_EMAIL_DOMAIN)
        report.users_created += len(made)
        self.ids.update(made)
        taken = [name for name in names if name not in made]
        if not taken:
            return
        # Taken since the lookup, by a registration or a concurrent import: the same rule.
        found = import_repo.accounts_by_username(taken)
        for name in taken:
            account = found.get(name)
            if account is None:  # a conflict on another column (an email, while unique)
                self.refused[name] = COULD_NOT_CREATE
            elif account.is_placeholder or self._existed_at_upload(account):
                self.ids[name] = account.id
            else:
                self.refused[name] = CREATED_AFTER_UPLOAD


def _task_rows(
    batch: list[ValidRow], report: ImportReport, assignees: Assignees
) -> list[dict[str, Any]]:
    """The batch's rows as task rows to insert, their assignees settled; the rows naming an
    assignee that cannot be used are counted as failed and left out."""
    assignees.settle((r.row.assigned_user for r in batch if r.row.assigned_user), report)
    now = datetime.now(UTC)
    rows = []
    for item in batch:
        r = item.row
        if r.assigned_user and r.assigned_user in assignees.refused:
            report.failed += 1
            report.add_error(item.line, "assigned_user", assignees.refused[r.assigned_user])
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
                "assigned_user_id": assignees.ids[r.assigned_user] if r.assigned_user else None,
                "created_at": created_at,
                "import_key": item.import_key,
            }
        )
    return rows


def _writer(
    actor: Actor, dry_run: bool, writers: int, batch_size: int
) -> SessionWriter | ParallelWriters:
    """A dry run's batches share the caller's transaction, and so do SQLite's (one writer at a
    time there); otherwise `writers` connections write at once."""
    if dry_run or writers < 2 or not import_repo.writes_in_parallel():
        return SessionWriter(actor.id, commit=not dry_run)
    return ParallelWriters(writers, actor.id, batch_size)


def import_tasks(
    binary: IO[bytes],
    actor: Actor,
    *,
    uploaded_at: datetime | None = None,
    dry_run: bool = False,
    batch_size: int = 2000,
    writers: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import a CSV file of tasks as `actor`. Returns the report. `uploaded_at` is the upload's
    time for the assignee rule (the module docstring); default: now, for a file read as it
    arrives. `writers`: database connections writing at once (app.services.csv_writers).
    Raises InvalidInput (422, bad header) before anything is written, and UnreadableInput (400)
    where the file stops being readable: batches before that point are committed (not in a dry
    run), so callers make one reading pass first (count_rows_within_cap) to refuse such a file,
    or one over the rows cap, whole."""
    report = ImportReport(dry_run=dry_run)
    assignees = Assignees(uploaded_at or utcnow(), settings().csv_max_new_accounts_per_file)

    def valid_rows() -> Iterator[ValidRow]:
        for line, values in read_rows(binary):
            report.rows += 1
            item = validate(line, values, report)
            if item is not None:
                yield item

    try:
        with _writer(actor, dry_run, writers, batch_size) as writer:
            for batch in _batches(valid_rows(), batch_size):
                writer.write(_task_rows(batch, report, assignees))
                if on_progress is not None:
                    on_progress(report.rows)
    except Exception:
        db.session.rollback()
        raise
    if dry_run:
        db.session.rollback()
    report.created = writer.created
    report.skipped_duplicates = writer.written - writer.created
    return report
