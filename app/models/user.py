"""Accounts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Enum, Index, String, true
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.enums import Role
from app.models.types import UTCDateTime, utcnow


class User(Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-case (normalised on the way in) so uniqueness is case-insensitive.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # Contact information, not an identity (logins are by username): not unique, so no answer
    # can tell whether another account has an address (migration 0008). No query looks an
    # account up by it, so it has no index either.
    email: Mapped[str] = mapped_column(String(320))
    # NULL for accounts that cannot log in until an admin sets a password (e.g. CSV-created ones).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(
            Role,
            native_enum=False,
            create_constraint=True,
            length=16,
            name="user_role",
            values_callable=lambda e: [m.value for m in e],
        ),
        default=Role.USER,
        index=True,
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_users_role_is_active", "role", "is_active"),)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username} {self.role}>"
