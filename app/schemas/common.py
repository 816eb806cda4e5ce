"""Models shared by every resource: strict input, pagination and the error body."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.models.types import MAX_ID


class StrictInput(BaseModel):
    """Request models refuse unknown fields: a body that tries to set `role`, `id` or anything
    undocumented gets a 422 instead of being silently ignored."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL (a query or an INSERT with one fails) and SQLite cuts
        # strings at it: refused as invalid input, whatever the field.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageQuery(StrictInput):
    # Capped so the SQL OFFSET ((page - 1) * per_page) stays within a 64-bit integer.
    page: int = Field(default=1, ge=1, le=MAX_ID, description="1-based page number")
    per_page: int = Field(default=20, ge=1, le=100, description="Items per page (at most 100)")


PAGE_FIELDS = frozenset({"page", "per_page"})
CURSOR_FIELDS = frozenset({"cursor", "limit"})
# Longer than any cursor the API issues (app.api.cursors: a 255-character name of 4-byte
# characters as a sort key makes about 1,500); a longer one is refused as invalid input.
MAX_CURSOR_LENGTH = 2048


class PageOrCursorQuery(PageQuery):
    """Numbered pages (`page`, `per_page`), or keyset pages: `limit` alone for the first, then
    `cursor` (and `limit`) from the previous page's `next_cursor`. One way per request."""

    cursor: str | None = Field(
        default=None,
        max_length=MAX_CURSOR_LENGTH,
        description="`next_cursor` of the previous page, with the same other parameters",
    )
    limit: int = Field(default=20, ge=1, le=100, description="Items per cursor page (at most 100)")

    @model_validator(mode="after")
    def _one_way_of_paging(self) -> Self:
        given = self.model_fields_set
        if given & PAGE_FIELDS and given & CURSOR_FIELDS:
            # Reported under each cursor parameter given, like any other invalid field: pydantic
            # merges a ValidationError raised here into the model's, locations kept.
            error = PydanticCustomError(
                "paging_mixed", "cannot be combined with page or per_page (numbered pages)"
            )
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(type=error, loc=(name,), input=getattr(self, name))
                    for name in sorted(given & CURSOR_FIELDS)
                ],
            )
        return self

    @property
    def cursor_mode(self) -> bool:
        return bool(self.model_fields_set & CURSOR_FIELDS)

    def question(self) -> dict[str, Any]:
        """What the list is asked, JSON-ready: every parameter but the paging ones. A cursor
        continues only the question it was issued for."""
        return self.model_dump(mode="json", exclude=set(PAGE_FIELDS | CURSOR_FIELDS))


class PageMeta(Output):
    page: int
    per_page: int
    total: int
    total_is_estimate: bool = Field(
        description="true when the list holds more than COUNT_EXACT_UP_TO items (10,000):"
        " `total` and `pages` are then the database's estimate, not a count",
    )
    pages: int


class CursorMeta(Output):
    next_cursor: str | None = Field(
        description="Send it as `cursor` (with the same other parameters) for the next page;"
        " null on the last page"
    )


class ErrorOut(BaseModel):
    """The one error shape of every non-2xx answer."""

    code: int = Field(description="The HTTP status code")
    message: str = Field(description="The HTTP reason phrase, e.g. 'Not Found'")
    description: str = Field(description="What went wrong, for a person")
    errors: dict[str, Any] | None = Field(
        default=None, description="Per-location, per-field messages for validation errors"
    )
