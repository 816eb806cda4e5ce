"""Opaque cursors of keyset pages: the position of the last item a client was given, bound to
the question it was given for, and signed.

A cursor is itsdangerous' URL-safe signed JSON (HMAC with SECRET_KEY and a salt of its own, so
no other signed value of the app reads as a cursor):

    {"v": 1, "q": <digest of the question>, "k": [<sort key values>..., <id>]}

`k` holds the last item's sort key values (datetimes as `{"dt": ISO 8601}`, dates as
`{"d": ISO 8601}`, enums as their values), `q` a digest of every query parameter except the
paging ones (sort, filters, `deleted`, and the day of the date view). A cursor is refused (400)
when its signature does not hold (forged, altered, truncated, garbage, or signed with another
key), when its version is not this one, or when it is used for another question. It is signed,
not encrypted: it holds only values of an item its holder was shown. It names no caller: the
page is read in the scope of whoever sends it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

from app.services.errors import UnreadableInput

CURSOR_VERSION = 1
# Keeps cursors apart from any other value the app signs with the same key.
CURSOR_SALT = "tasks.keyset-cursor"


class _CompactJSON:
    """JSON without spaces, UTF-8 text kept as is: `\\uXXXX` escapes would make a cursor with a
    non-ASCII name three times as long."""

    @staticmethod
    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    @staticmethod
    def loads(text: str | bytes) -> Any:
        return json.loads(text)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(
        current_app.config["SECRET_KEY"], salt=CURSOR_SALT, serializer=_CompactJSON
    )


def question_digest(question: Mapping[str, Any]) -> str:
    """A short digest of a question (JSON-ready parameters), the same whatever their order."""
    canonical = json.dumps(question, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode()


def _encoded(value: Any) -> Any:
    if isinstance(value, datetime):  # before date: a datetime is a date
        return {"dt": value.isoformat()}
    if isinstance(value, date):
        return {"d": value.isoformat()}
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, int | str):
        return value
    raise TypeError(f"a sort key value cannot be {type(value).__name__}")


def _decoded(value: Any) -> Any:
    """A sort key value as encoded by `_encoded`; ValueError for anything else."""
    if isinstance(value, dict) and value.keys() == {"dt"} and isinstance(value["dt"], str):
        return datetime.fromisoformat(value["dt"])
    if isinstance(value, dict) and value.keys() == {"d"} and isinstance(value["d"], str):
        return date.fromisoformat(value["d"])
    if value is None or isinstance(value, str) or type(value) is int:
        return value
    raise ValueError("not a sort key value")


def issue_cursor(position: Sequence[Any], question: Mapping[str, Any]) -> str:
    """The cursor of the page after `position` (sort key values), for `question` only."""
    payload = {
        "v": CURSOR_VERSION,
        "q": question_digest(question),
        "k": [_encoded(value) for value in position],
    }
    return str(_serializer().dumps(payload))


def _refused(description: str, reason: str) -> UnreadableInput:
    return UnreadableInput(description, errors={"cursor": [reason]}, location="query")


def read_cursor(cursor: str, question: Mapping[str, Any]) -> list[Any]:
    """The position a cursor holds (sort key values, dates and datetimes restored), if it is
    one this API issued for `question`; else UnreadableInput (400)."""
    try:
        payload = _serializer().loads(cursor)
    except BadData as exc:  # bad signature, bad base64, bad JSON
        raise _refused(
            "the cursor is not one this API issued, or it was altered", "invalid cursor"
        ) from exc
    if not isinstance(payload, dict) or payload.get("v") != CURSOR_VERSION:
        raise _refused(
            "the cursor is from another version of the API; start again without it",
            "unsupported cursor version",
        )
    if payload.get("q") != question_digest(question):
        raise _refused(
            "the cursor belongs to another question: send it with the sort, filters and date it"
            " was issued for (the `next` link does), or start again without it",
            "issued for another sort, filter or date",
        )
    try:
        keys = payload["k"]
        if not isinstance(keys, list):
            raise ValueError("no sort key values")
        return [_decoded(value) for value in keys]
    except (KeyError, ValueError) as exc:
        raise _refused("the cursor cannot be read", "invalid cursor") from exc
