"""Page bodies and RFC 8288 `Link` headers for paginated lists."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlencode

from flask import request


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
    # The other parameters are encoded once; `page` keeps its place among them (else comes last).
    params = {**args, "page": ""}
    encoded = [urlencode({name: value}) for name, value in params.items()]
    at = list(params).index("page")
    links = []
    for rel, page in targets.items():
        encoded[at] = f"page={page}"
        links.append(f'<{base_url}?{"&".join(encoded)}>; rel="{rel}"')
    return ", ".join(links)


def paginated(pagination: Pagination) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A page's body and its Link header for the current request."""
    link = link_header(pagination, request.args.to_dict(), request.base_url)
    return page_body(pagination), 200, {"Link": link}
