"""What a process remembers of sessions it has verified against the database, so that an
authenticated request needs no query while nothing about that session has changed.

An entry (user id, token family) -> role is only trusted while the counters that guard it, the
global one and the user's auth generation (`app.cache.store.auth_generation`), still have the
values read *before* the database said the session was live, and for at most `TRUST_SECONDS`
after that database query began. Every change that could end or alter a session (logout, a
revoked family, a role or active-flag change, a deleted user) bumps the user's counter after its
commit (app.cache.invalidation), so a stale entry is never used: the next request sees a new
value and asks the database again. Without a working counter store there is nothing to check
entries against, and every request asks the database.

Why the time limit: a bump can fail (a store that times out for the writing process only, or
that is down and comes back). The writing request then keeps retrying its bump for longer than
`TRUST_SECONDS` before it answers (app.cache.store, `REVOCATION_PATIENCE_SECONDS`), so once the
revocation has been answered, either its bump has landed or every entry remembered before its
commit is past its trust: no process can accept the revoked session any more, even one whose
own reads of the store never failed. A hot session costs one query per process every
`TRUST_SECONDS`, instead of one per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

from cachetools import LRUCache

from app.models import Role

SessionKey = tuple[int, str]  # (user id, token family id)

# How long a verified session is trusted without asking the database again, at most. The cache
# waits longer than this for a revoking bump that fails (app.cache.store): keep it short.
TRUST_SECONDS = 1.0


class _Remembered(NamedTuple):
    counters: tuple[bytes, ...]
    role: Role
    asked_at: float  # time.monotonic() when the database was about to be asked


class SessionMemory:
    """A bounded, thread-safe map of verified sessions to the role they were verified with."""

    def __init__(self, max_entries: int, trust_seconds: float = TRUST_SECONDS) -> None:
        # More than TRUST_SECONDS would outlast a revoking write's patience: tests only.
        self._entries: LRUCache[SessionKey, _Remembered] = LRUCache(maxsize=max_entries)
        self._trust_seconds = trust_seconds
        self._lock = threading.Lock()

    def recall(self, user_id: int, family_id: str, counters: Sequence[bytes]) -> Role | None:
        """The session's role if it was verified while the counters had these values, and
        recently enough to be trusted still."""
        with self._lock:
            entry = self._entries.get((user_id, family_id))
        if entry is None or entry.counters != tuple(counters):
            return None
        if time.monotonic() - entry.asked_at >= self._trust_seconds:
            return None
        return entry.role

    def last_role(self, user_id: int, family_id: str) -> Role | None:
        """The role last verified for the session, whether or not it is still current."""
        with self._lock:
            entry = self._entries.get((user_id, family_id))
        return entry.role if entry else None

    def remember(
        self,
        user_id: int,
        family_id: str,
        counters: Sequence[bytes],
        role: Role,
        asked_at: float,
    ) -> None:
        """Record a session the database has just confirmed live and active, with the counter
        values read before that query and the time (`time.monotonic()`) taken before it."""
        with self._lock:
            self._entries[(user_id, family_id)] = _Remembered(tuple(counters), role, asked_at)
