"""Task models: create, partial update, output, list query and audit entries."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.models import AuditAction, TaskPriority, TaskStatus
from app.models.types import MAX_ID
from app.repositories.task_order import SORTABLE_COLUMNS
from app.schemas.common import (
    JSON_INTEGER,
    CursorMeta,
    Day,
    Output,
    PageMeta,
    PageOrCursorQuery,
    StrictInput,
)
from app.schemas.documented import (
    CONTROL_CHARACTERS,
    JsonSchemaPattern,
    integer_at_most_pattern,
    not_nullable,
    stripped_text_pattern,
)
from app.services.tasks import DeletedFilter

# C0 control characters other than tab, newline and carriage return, and DEL: nothing a person
# types, and each costs six bytes in every JSON answer (`\u0001`).
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(value: str) -> str:
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters (other than tab and newline)")
    return value


TaskName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_no_control_characters),
    JsonSchemaPattern(stripped_text_pattern(CONTROL_CHARACTERS, 255), replaces_lengths=True),
]
Description = Annotated[
    str,
    Field(max_length=10_000),
    AfterValidator(_no_control_characters),
    JsonSchemaPattern(rf"^[^{CONTROL_CHARACTERS}]*$"),
]
# Ids past the INTEGER columns' range match no user; bounding them here keeps them out of SQL.
UserId = Annotated[int, Field(ge=1, le=MAX_ID), JSON_INTEGER]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class TaskCreateIn(StrictInput):
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "examples": [
            {
                "task_name": "Quarterly report",
                "description": "Numbers for Q3",
                "priority": "HIGH",
                "due_date": "2030-01-31",
            }
        ]
    }

    task_name: TaskName
    description: Description | None = None
    status: TaskStatus = TaskStatus.ACTIVE
    priority: TaskPriority = TaskPriority.MEDIUM
    assigned_user_id: UserId | None = None
    due_date: Day | None = None

    # Enum values are matched in any case: "high", "Active".
    _priority_upper = field_validator("priority", mode="before")(_upper)
    _status_lower = field_validator("status", mode="before")(_lower)


class TaskUpdateIn(StrictInput):
    """Partial update: only the fields present in the body change."""

    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "examples": [{"status": "inactive", "priority": "LOW"}]
    }

    # May be left out, never null (refused below): documented as not nullable.
    task_name: TaskName | None = Field(None, json_schema_extra=not_nullable)
    description: Description | None = None
    status: TaskStatus | None = Field(None, json_schema_extra=not_nullable)
    priority: TaskPriority | None = Field(None, json_schema_extra=not_nullable)
    assigned_user_id: UserId | None = None
    due_date: Day | None = None

    # Enum values are matched in any case: "high", "Active".
    _priority_upper = field_validator("priority", mode="before")(_upper)
    _status_lower = field_validator("status", mode="before")(_lower)

    @field_validator("task_name", "status", "priority")
    @classmethod
    def _required_fields_not_null(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs only for fields present in the body, so the error is reported under the field.
        if value is None:
            raise ValueError(f"{info.field_name} cannot be null")
        return value


class TaskOut(Output):
    id: int
    task_name: str
    description: str | None
    status: TaskStatus
    priority: TaskPriority
    assigned_user_id: int | None
    created_by_id: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    due_date: date | None


class LogSnapshot(Output):
    """A task as the daily loader saw it on `log_date`."""

    log_id: int
    log_date: date
    status: TaskStatus
    priority: TaskPriority
    assigned_user_id: int | None
    logged_at: datetime


class TaskListItem(TaskOut):
    """A task in a list. With `?date=`, `log` holds that day's snapshot; otherwise it is null."""

    log: LogSnapshot | None = None


class TaskPage(PageMeta):
    """A numbered page (`page`, `per_page`, or no paging parameter), with the list's total."""

    items: list[TaskListItem]


class TaskCursorPage(CursorMeta):
    """A cursor page (`limit`, `cursor`): no total; `next_cursor` continues the list."""

    items: list[TaskListItem]


def _page_kind(page: Any) -> str:
    """Which shape a list answer has: a body (dict) as the view returns it, or a model."""
    if isinstance(page, dict):
        return "cursor" if "next_cursor" in page else "page"
    return "cursor" if isinstance(page, TaskCursorPage) else "page"


class TaskListPage(
    RootModel[
        Annotated[
            Annotated[TaskPage, Tag("page")] | Annotated[TaskCursorPage, Tag("cursor")],
            Discriminator(_page_kind),
        ]
    ]
):
    """A page of the task list: numbered (`TaskPage`) or cursor (`TaskCursorPage`), as the
    request's paging parameters ask. The shape is chosen by the answer's own keys, so
    serializing one never tries the other."""


SORT_FIELD_LIST = ", ".join(sorted(SORTABLE_COLUMNS))
_SORT_TERM = re.compile(r"^-?([a-z_]+)$")
SORT_SPACE = " \t"  # around a term: ignored
_SORT_FIELD = "|".join(sorted(SORTABLE_COLUMNS))
_SORT_TERM_PATTERN = rf"[{SORT_SPACE}]*-?(?:{_SORT_FIELD})[{SORT_SPACE}]*"
SORT_PATTERN = rf"^{_SORT_TERM_PATTERN}(?:,{_SORT_TERM_PATTERN})*$"


class TaskListQuery(PageOrCursorQuery):
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    # The pattern refuses absurd lengths; the validator below, ids past MAX_ID (documented).
    assigned_user: (
        Annotated[
            str,
            Field(pattern=r"^([1-9][0-9]{0,17}|none)$"),
            JsonSchemaPattern(f"^({integer_at_most_pattern(MAX_ID)}|none)$"),
        ]
        | None
    ) = Field(default=None, description='A user id, or "none" for unassigned tasks')
    q: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Case-insensitive search in name and description"
    )
    created_from: Day | None = Field(default=None, description="Created on or after (UTC day)")
    created_to: Day | None = Field(default=None, description="Created on or before (UTC day)")
    date: Day | None = Field(
        default=None, description="Show the daily task log of this day (YYYY-MM-DD) instead"
    )
    due_from: Day | None = None
    due_to: Day | None = None
    sort: Annotated[str, Field(max_length=200), JsonSchemaPattern(SORT_PATTERN)] = Field(
        default="-created_at",
        description=f"Comma-separated fields, `-` for descending, each at most once. Fields: "
        f"{SORT_FIELD_LIST}",
    )
    deleted: DeletedFilter = Field(
        default=DeletedFilter.EXCLUDE, description="Soft-deleted tasks (admins only): include, only"
    )

    # Enum values are matched in any case: "high", "Active".
    _priority_upper = field_validator("priority", mode="before")(_upper)
    _status_lower = field_validator("status", mode="before")(_lower)

    @field_validator("assigned_user")
    @classmethod
    def _assigned_user_in_range(cls, value: str | None) -> str | None:
        if value is not None and value != "none" and int(value) > MAX_ID:
            raise ValueError(f"a user id is at most {MAX_ID}")
        return value

    @field_validator("sort")
    @classmethod
    def _known_sort_fields(cls, value: str) -> str:
        seen: set[str] = set()
        for term in value.split(","):
            match = _SORT_TERM.match(term.strip(SORT_SPACE))
            if match is None or match.group(1) not in SORTABLE_COLUMNS:
                raise ValueError(
                    f"unknown sort field {term.strip(SORT_SPACE)!r}; allowed: {SORT_FIELD_LIST}"
                )
            # A field sorts once: a repeat changes nothing but would be another question to cache.
            if match.group(1) in seen:
                raise ValueError(f"sort field {match.group(1)!r} is given more than once")
            seen.add(match.group(1))
        return value

    @model_validator(mode="after")
    def _ranges_in_order(self) -> TaskListQuery:
        if self.created_from and self.created_to and self.created_from > self.created_to:
            raise ValueError("created_from is after created_to")
        if self.due_from and self.due_to and self.due_from > self.due_to:
            raise ValueError("due_from is after due_to")
        return self

    def sort_terms(self) -> tuple[tuple[str, bool], ...]:
        terms = (t.strip(SORT_SPACE) for t in self.sort.split(","))
        return tuple((t.lstrip("-"), t.startswith("-")) for t in terms)

    def question(self) -> dict[str, Any]:
        # The sort as it is applied: `id, -status` and `id,-status` are one question.
        return {**super().question(), "sort": self.sort_terms()}


class AuditEntryOut(Output):
    id: int
    task_id: int
    actor_id: int | None
    action: AuditAction
    changes: dict[str, Any] = Field(description='{"field": {"old": ..., "new": ...}}')
    created_at: datetime


class AuditPage(PageMeta):
    items: list[AuditEntryOut]
