"""Account models: registration, login, tokens, profile and admin user management."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, EmailStr, Field, StrictBool, StringConstraints

from app.models import Role
from app.schemas.common import Output, PageMeta, PageQuery, StrictInput
from app.schemas.documented import (
    NUL,
    SPECIAL_USE_DOMAIN,
    WHITESPACE,
    JsonSchemaPattern,
    NotMatching,
    stripped_text_pattern,
)


def _lower(value: str) -> str:
    return value.lower()


# Starts with a letter so a username can never be mistaken for a numeric id.
Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$"
    ),
    AfterValidator(_lower),
    JsonSchemaPattern(
        rf"^[{WHITESPACE}]*[A-Za-z][A-Za-z0-9_.-]{{2,63}}[{WHITESPACE}]*$", replaces_lengths=True
    ),
]
# 254: the longest address email-validator takes (RFC 3696 erratum 1690).
Email = Annotated[
    EmailStr, Field(max_length=254), AfterValidator(_lower), NotMatching(SPECIAL_USE_DOMAIN)
]
# Long enough for passphrases, bounded so nobody makes us hash a megabyte.
NewPassword = Annotated[str, Field(min_length=8, max_length=256)]
AnyPassword = Annotated[str, Field(min_length=1, max_length=256)]


class RegisterIn(StrictInput):
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "examples": [
            {"username": "alice", "email": "alice@example.com", "password": "correct horse battery"}
        ]
    }

    username: Username
    email: Email
    password: NewPassword


class LoginIn(StrictInput):
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "examples": [{"username": "alice", "password": "correct horse battery"}]
    }

    username: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
        AfterValidator(_lower),
        JsonSchemaPattern(stripped_text_pattern(NUL, 64), replaces_lengths=True),
    ]
    password: AnyPassword


class RefreshIn(StrictInput):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class TokenPairOut(Output):
    access_token: str
    refresh_token: str
    token_type: str = Field(description='Always "Bearer"')
    expires_in: int = Field(description="Seconds until the access token expires")


class UserOut(Output):
    id: int
    username: str
    email: str
    role: Role
    is_active: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class MeUpdateIn(StrictInput):
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        # A new password needs the current one (app.services.accounts).
        "if": {"required": ["password"], "properties": {"password": {"type": "string"}}},
        "then": {
            "required": ["current_password"],
            "properties": {"current_password": {"type": "string"}},
        },
        "examples": [{"email": "alice@example.org"}],
    }

    email: Email | None = None
    password: NewPassword | None = Field(default=None, description="The new password")
    current_password: AnyPassword | None = Field(
        default=None, description="Required when changing the password"
    )


class UserListQuery(PageQuery):
    role: Role | None = None
    is_active: bool | None = None


class UserPage(PageMeta):
    items: list[UserOut]


class AdminUserPatchIn(StrictInput):
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {"examples": [{"role": "moderator"}]}

    email: Email | None = None
    role: Role | None = None
    # Strict: `"no"`, `0` or `"off"` would otherwise be read as false; the document says a boolean.
    is_active: StrictBool | None = None
    password: NewPassword | None = Field(
        default=None, description="Set a new password (e.g. for an account created by CSV import)"
    )
