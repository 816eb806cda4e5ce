"""Page bodies and RFC 8288 `Link` headers for paginated lists: numbered pages (first, prev,
next and last links) and cursor pages (a next link only).

Links never come from the request's `Host` (a client chooses it, and the answer is cached and
shared): they are relative references (`/tasks?page=2`), or absolute under EXTERNAL_URL when
that is set.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlencode

from flask import current_app, request

from app.config import Settings


class Pagination(Protocol):
    """A page of a list: Flask-SQLAlchemy's Pagination, or app.services.pages.Page."""

    @property
    def items(self) -> Any: ...

    @property
    def page(self) -> int: ...

    @property
    def per_page(self) -> int: ...

    @property
    def total(self) -> int | None: ...

    @property
    def pages(self) -> int: ...


def page_body(pagination: Pagination) -> dict[str, Any]:
    return {
        "items": pagination.items,
        "page": pagination.page,
        "per_page": pagination.per_page,
        "total": pagination.total or 0,
        "total_is_estimate": getattr(pagination, "total_is_estimate", False),
        "pages": pagination.pages,
    }


def link_header(pagination: Pagination, args: dict[str, str], base_url: str) -> str:
    """first, prev, next and last links to `base_url` that keep every other query parameter
    (`args`, the request's)."""
    last = max(pagination.pages, 1)
    targets = {"first": 1, "last": last}
    if pagination.page > 1:
        targets["prev"] = min(pagination.page - 1, last)
    if pagination.page < last:
        targets["next"] = pagination.page + 1
    return ", ".join(link(base_url, args, "page", page, rel) for rel, page in targets.items())


def link(base_url: str, args: dict[str, str], name: str, value: object, rel: str) -> str:
    """One link: the request's parameters (`args`) with `name` set to `value`, in its place
    (else last), so that the link asks the same question."""
    return f'<{base_url}?{urlencode({**args, name: value})}>; rel="{rel}"'


def links_base() -> str:
    """Where the current request's links point: its path, under EXTERNAL_URL if set."""
    settings: Settings = current_app.config["SETTINGS"]
    if settings.external_url:
        return settings.external_url.rstrip("/") + request.path
    return request.script_root + request.path


def paginated(pagination: Pagination) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A page's body and its Link header for the current request."""
    links = link_header(pagination, request.args.to_dict(), links_base())
    return page_body(pagination), 200, {"Link": links}


def cursor_paginated(
    items: Any, next_cursor: str | None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A cursor page's body and, unless it is the last, its `next` Link header."""
    body = {"items": items, "next_cursor": next_cursor}
    if next_cursor is None:
        return body, 200, {}
    next_link = link(links_base(), request.args.to_dict(), "cursor", next_cursor, "next")
    return body, 200, {"Link": next_link}
