"""Models shared by every resource: strict input, pagination and the error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class PageMeta(Output):
    page: int
    per_page: int
    total: int
    pages: int


class ErrorOut(BaseModel):
    """The one error shape of every non-2xx answer."""

    code: int = Field(description="The HTTP status code")
    message: str = Field(description="The HTTP reason phrase, e.g. 'Not Found'")
    description: str = Field(description="What went wrong, for a person")
    errors: dict[str, Any] | None = Field(
        default=None, description="Per-location, per-field messages for validation errors"
    )
