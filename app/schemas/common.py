"""Models shared by every resource: strict input, pagination and the error body."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.models.types import MAX_ID
from app.schemas.documented import document_model, no_default

NOT_A_JSON_OBJECT = "Input should be a JSON object"
# Where APIFlask reports an error about the whole input rather than one field.
ROOT_ERROR_FIELD = "_schema"
_ISO_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _iso_day(value: Any) -> Any:
    # pydantic reads a number (Unix time) or a datetime's text as a date too; the document says
    # YYYY-MM-DD, and so does the validation.
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DAY.fullmatch(value)):
        return value
    raise PydanticCustomError("date_format", "Input should be a date as YYYY-MM-DD")


Day = Annotated[date, BeforeValidator(_iso_day)]


def _json_integer(value: Any) -> Any:
    # pydantic reads "5", b"5" and true as integers too; in a JSON body the document says a number.
    if isinstance(value, str | bytes | bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# `Annotated` metadata of an integer field of a JSON body, after its constraints (query parameters
# arrive as text, and are read as pydantic reads them).
JSON_INTEGER = BeforeValidator(_json_integer)


class StrictInput(BaseModel):
    """Request models refuse unknown fields: a body that tries to set `role`, `id` or anything
    undocumented gets a 422 instead of being silently ignored."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=document_model)
    # Added to the model's JSON Schema: `examples`, rules between fields.
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, value: Any) -> Any:
        # pydantic's own message for a body that is no object names the model class ("... or
        # instance of TaskCreateIn"): an internal name, meaningless to a client.
        if not isinstance(value, dict | cls):
            raise PydanticCustomError("object_type", NOT_A_JSON_OBJECT)
        return value

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
    `cursor` (and `limit`) from the previous page's `next_cursor`. One way per request.

    The paging parameters document no default: giving one chooses the way of paging, and a
    client that sends every default it is told (generated clients do) would send both."""

    page: int = Field(
        default=1,
        ge=1,
        le=MAX_ID,
        description="1-based page number (default 1)",
        json_schema_extra=no_default,
    )
    per_page: int = Field(
        default=20,
        ge=1,
        le=100,
        description="Items per page (at most 100, default 20)",
        json_schema_extra=no_default,
    )
    cursor: str | None = Field(
        default=None,
        max_length=MAX_CURSOR_LENGTH,
        description="`next_cursor` of the previous page, with the same other parameters",
    )
    limit: int = Field(
        default=20,
        ge=1,
        le=100,
        description="Items per cursor page (at most 100, default 20)",
        json_schema_extra=no_default,
    )

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
