"""What a process remembers of sessions it has verified against the database, so that an
authenticated request needs no query while nothing about that session has changed.

An entry (user id, token family) -> role is only trusted while the counters that guard it, the
global one and the user's auth generation (`app.cache.store.auth_generation`), still have the
values read *before* the database said the session was live. Every change that could end or alter
a session (logout, a revoked family, a role or active-flag change, a deleted user) bumps the
user's counter after its commit (app.cache.invalidation), so a stale entry is never used: the
next request sees a new value and asks the database again. Without a working counter store there
is nothing to check entries against, and every request asks the database.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from cachetools import LRUCache

from app.models import Role

SessionKey = tuple[int, str]  # (user id, token family id)


class SessionMemory:
    """A bounded, thread-safe map of verified sessions to the role they were verified with."""

    def __init__(self, max_entries: int) -> None:
        self._entries: LRUCache[SessionKey, tuple[tuple[bytes, ...], Role]] = LRUCache(
            maxsize=max_entries
        )
        self._lock = threading.Lock()

    def recall(self, user_id: int, family_id: str, counters: Sequence[bytes]) -> Role | None:
        """The session's role if it was verified while the counters had these values."""
        with self._lock:
            entry = self._entries.get((user_id, family_id))
        if entry is None or entry[0] != tuple(counters):
            return None
        return entry[1]

    def last_role(self, user_id: int, family_id: str) -> Role | None:
        """The role last verified for the session, whether or not it is still current."""
        with self._lock:
            entry = self._entries.get((user_id, family_id))
        return entry[1] if entry else None

    def remember(self, user_id: int, family_id: str, counters: Sequence[bytes], role: Role) -> None:
        """Record a session the database has just confirmed live and active, with the counter
        values read before that query."""
        with self._lock:
            self._entries[(user_id, family_id)] = (tuple(counters), role)
