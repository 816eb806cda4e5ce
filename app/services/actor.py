"""Who performs an action, as the services see it."""

from __future__ import annotations

from typing import Protocol

from app.models import Role


class Actor(Protocol):
    """An account's id and role: a verified session (`sessions.Principal`) or a `User` row.
    The rules need nothing else, so a request can be served without loading the account."""

    @property
    def id(self) -> int: ...

    @property
    def role(self) -> Role: ...
