"""CSV import models: one row of the file, the upload form and the report."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from apiflask.fields import UploadFile
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.models import TaskPriority, TaskStatus
from app.schemas.common import Output, StrictInput
from app.schemas.tasks import Description, TaskName

TRUE_WORDS = frozenset({"true", "1", "yes", "y", "active"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "inactive"})


def parse_day(value: str) -> date:
    """`M/D/YYYY` (the brief's format) or ISO 8601: a date, or a datetime whose day is used (its
    UTC day when it has an offset, as tasks are stored at midnight UTC of that day)."""
    value = value.strip()
    if "/" in value:
        month, day, year = (int(part) for part in value.split("/"))
        return date(year, month, day)
    try:
        return date.fromisoformat(value)
    except ValueError:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


class CsvTaskRow(StrictInput):
    """One data row. Cells arrive as strings; empty optional cells mean "not given"."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # The API's own rules for a task's text (lengths, no control characters).
    task_name: TaskName
    description: Description | None = None
    status: TaskStatus
    priority: TaskPriority
    created_at: date | None = None
    assigned_user: (
        Annotated[
            str,
            StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$"),
        ]
        | None
    ) = None

    @field_validator("description", "created_at", "assigned_user", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("status", mode="before")
    @classmethod
    def _status_word(cls, value: Any) -> Any:
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return TaskStatus.ACTIVE
        if word in FALSE_WORDS:
            return TaskStatus.INACTIVE
        raise ValueError("status must be TRUE/FALSE, 1/0, yes/no or active/inactive")

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_any_case(cls, value: Any) -> Any:
        return str(value).strip().upper()

    @field_validator("created_at", mode="before")
    @classmethod
    def _day(cls, value: Any) -> Any:
        # Before-validators run last-defined first: this one sees a blank cell before
        # _blank_is_none does, and must let it through as "not given" too.
        if isinstance(value, date):
            return value
        if value is None or not str(value).strip():
            return None
        try:
            return parse_day(str(value))
        except ValueError as exc:
            raise ValueError("created_at must be M/D/YYYY or an ISO 8601 date") from exc

    @field_validator("assigned_user", mode="after")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


class CsvUploadIn(BaseModel):
    file: UploadFile = Field(description="The CSV file (UTF-8, header row required)")
    dry_run: bool = Field(default=False, description="Validate and count, write nothing")


class ImportErrorOut(Output):
    line: int = Field(
        description="The file's line number where the row starts (the header is line 1; a "
        "quoted value may span several lines)",
    )
    column: str
    message: str


class ImportReportOut(Output):
    rows: int
    created: int
    skipped_duplicates: int
    failed: int = Field(
        description="Rows not imported: invalid, or naming an assignee that cannot be used "
        "(an account created after the upload, or an unknown one over the new-accounts cap)"
    )
    users_created: int = Field(
        description="Inactive accounts made for unknown assignees (at most "
        "CSV_MAX_NEW_ACCOUNTS_PER_FILE per file; rows naming further unknown assignees fail)"
    )
    dry_run: bool
    errors: list[ImportErrorOut] = Field(description="The first 100 row errors")
