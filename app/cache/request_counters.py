"""The generation counters' values that the current request's cached answer was looked up
under, for the lookups the same request makes afterwards (a list's total or ids, a day's
entries: see app.services.pages.remembered): a value stored under those very values belongs
with an answer stored under them, and reading it costs no round trip when this process has a
copy."""

from __future__ import annotations

from collections.abc import Mapping

from flask import g, has_app_context

from app.cache.store import Lookup

_VALUES = "cache_counter_values"  # attribute of flask.g (the app context: one request)


def note_counters_of(looked: Lookup) -> None:
    setattr(g, _VALUES, looked.counter_values())


def noted_counters() -> Mapping[str, bytes]:
    if not has_app_context():
        return {}
    values: Mapping[str, bytes] = g.get(_VALUES, {})
    return values
