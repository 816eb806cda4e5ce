"""Idempotency keys: the answer to a write, kept so that a retry of it gets the same answer.

A row is claimed (committed) before the work starts and holds no answer while the work runs;
the answer is stored once the work succeeded. Keys belong to one user: two users' key "k" are
two rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import UTCDateTime, utcnow


class IdempotencyKey(Model):
    __tablename__ = "idempotency_keys"
    # Leads with user_id, so it also serves the foreign key's ON DELETE look-up.
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 (hex) of the method, the endpoint and the request's content: a retry must ask the
    # same question to get the stored answer.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # NULL while the first request is still working (in progress); set with the answer.
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    response_location: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Past it the key is treated as absent, and the row is purged.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
