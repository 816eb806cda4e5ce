"""Logging for the app, granian and Celery in one format (LOG_FORMAT): JSON lines for machines,
or text for people; either way with the request id (and user id, job id) on each line."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from app.unique import unique_bits

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is echoed only if it looks like an id (no log injection through the header).
_MAX_REQUEST_ID = 128
_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")

log = logging.getLogger("app.request")


class RequestContextFilter(logging.Filter):
    """Adds the request id (and user id, once known) to every record logged during a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = g.get("request_id")
            if getattr(record, "user_id", None) is None:
                record.user_id = g.get("log_user_id")
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message and any extra fields."""
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


class TextFormatter(logging.Formatter):
    """Python's text line, then the fields that tie it to a request or a job as `name=value`
    (the JSON format has every extra field; these are the ones a person looks for)."""

    CONTEXT = ("latency_ms", "user_id", "request_id", "celery_job_id")

    def formatMessage(self, record: logging.LogRecord) -> str:  # before any traceback
        context = " ".join(
            f"{name}={value}"
            for name in self.CONTEXT
            if (value := getattr(record, name, None)) is not None
        )
        line = super().formatMessage(record)
        return f"{line}  {context}" if context else line


def text_formatter() -> logging.Formatter:
    return TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of LOG_FORMAT (`json` or `text`)."""
    return json_formatter() if log_format == "json" else text_formatter()


def configure_logging(log_format: str, level: str) -> None:
    """Root logging: one handler on stderr, JSON or text, request ids attached."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


def request_id_from(given: str | None) -> str:
    """The client's `X-Request-ID` if it looks like an id, else a new one."""
    if given and len(given) <= _MAX_REQUEST_ID and set(given) <= _REQUEST_ID_CHARS:
        return given
    return f"{unique_bits(128):032x}"


def log_request(
    environ: dict[str, Any],
    status: int,
    latency_ms: float | None,
    user_id: int | None,
) -> None:
    """The one line logged per request. It is the access log too: the server's own is off
    (app.server), as the server cannot know the user id."""
    method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
    fields: dict[str, Any] = {
        "method": method,
        "path": path,
        "query": environ.get("QUERY_STRING") or None,
        "status": status,
        "latency_ms": latency_ms,
        "user_id": user_id,
        "remote_addr": environ.get("REMOTE_ADDR"),
    }
    log.info("%s %s %s", method, path, status, extra=fields)


def install_request_logging(app: Flask) -> None:
    """Accept or make a request id, echo it, and log one line per request (REQUEST_LOG)."""

    @app.before_request
    def _start() -> None:
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        if app.config["SETTINGS"].request_log:
            started = g.get("request_started")
            latency_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
            log_request(request.environ, response.status_code, latency_ms, _user_id())
        return response


def _user_id() -> int | None:
    """The authenticated caller's id (the verified session: no query)."""
    user_id = getattr(g.get("flask_httpauth_user"), "id", None)
    return user_id if isinstance(user_id, int) else None
