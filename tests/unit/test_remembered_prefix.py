"""Where a list's remembered values live (app.services.pages._prefix): one digest per question,
kept per description, the same whether kept or computed afresh."""

from __future__ import annotations

import hashlib
from datetime import date

from app.models.enums import TaskStatus
from app.repositories.tasks import TaskFilters, TaskScope
from app.services.pages import _described, _prefix


def digest(kind: str, what: object) -> str:
    return f"{kind}:{hashlib.sha256(repr(what).encode()).hexdigest()[:40]}"


def test_a_prefix_is_the_digest_of_the_description_kept_or_not() -> None:
    what = ("log", date(2026, 11, 27), TaskScope(owner_id=7), TaskFilters(status=TaskStatus.ACTIVE))
    _described.cache_clear()
    first = _prefix("log-ids", what)
    again = _prefix(
        "log-ids",
        ("log", date(2026, 11, 27), TaskScope(owner_id=7), TaskFilters(status=TaskStatus.ACTIVE)),
    )
    assert first == again == digest("log-ids", what)
    assert _described.cache_info().hits == 1  # the equal description was not described again


def test_different_questions_get_different_prefixes() -> None:
    scope = TaskScope(owner_id=None)
    prefixes = {
        _prefix("count", ("tasks", scope, TaskFilters())),
        _prefix("count", ("tasks", scope, TaskFilters(status=TaskStatus.ACTIVE))),
        _prefix("count", ("tasks", TaskScope(owner_id=7), TaskFilters())),
        _prefix("count", ("tasks", scope, TaskFilters(q="x"))),
        _prefix("log-ids", ("tasks", scope, TaskFilters())),
    }
    assert len(prefixes) == 5


def test_an_unhashable_description_is_described_each_time() -> None:
    assert _prefix("count", ["tasks", {"a": 1}]) == digest("count", ["tasks", {"a": 1}])
