"""URLs and headers over the configured limits (MAX_URL_BYTES, MAX_HEADER_BYTES,
MAX_HEADER_COUNT): 414 and 431 in the API's JSON error, before any other work (rate limits,
authentication, the view).

The servers have limits of their own, higher (app/config.py), past which they answer before the
app sees the request, with an empty body (granian) or an HTML page (werkzeug's development
server). Below those, the app's limits make a too-long query string or an oversized header get
the documented answer instead.
"""

from __future__ import annotations

from flask import current_app, request
from werkzeug.exceptions import RequestHeaderFieldsTooLarge, RequestURITooLarge

from app.config import Settings


def url_bytes() -> int:
    """The request target's length: the path (as the server decoded it) and the raw query."""
    environ = request.environ
    query = environ.get("QUERY_STRING", "")
    return len(environ.get("PATH_INFO", "")) + (len(query) + 1 if query else 0)


def refuse_oversized_requests() -> None:
    settings: Settings = current_app.config["SETTINGS"]
    if url_bytes() > settings.max_url_bytes:
        raise RequestURITooLarge(
            f"The URL (path and query) is longer than {settings.max_url_bytes} bytes."
        )
    headers = list(request.headers.items())
    if len(headers) > settings.max_header_count:
        raise RequestHeaderFieldsTooLarge(
            f"The request has more than {settings.max_header_count} headers."
        )
    if sum(len(name) + len(value) for name, value in headers) > settings.max_header_bytes:
        raise RequestHeaderFieldsTooLarge(
            f"The request's headers are larger than {settings.max_header_bytes} bytes."
        )
