"""Prometheus metrics at `/metrics`: requests and latency per endpoint, cache lookups, and the
daily loader (read from its run records, so figures are right whichever process ran it).

With several server workers set PROMETHEUS_MULTIPROC_DIR (app.server empties it before the
workers start) so every worker's counts are summed. Set METRICS_TOKEN to require
`Authorization: Bearer <token>`. In staging and production `/metrics` is not served at all (404)
without METRICS_TOKEN; in development and tests it is open.

Labels take only bounded values: the route template (never the raw path) and the method, with
any method outside HTTP's standard ones counted as `other`, so that no client can add series.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from apiflask import APIFlask
from flask import Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import NotFound, Unauthorized

from app.config import Settings

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered", ["method", "endpoint", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CACHE_LOOKUPS = Counter("cache_lookups_total", "Response-cache lookups", ["result"])
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

log = logging.getLogger(__name__)


class LoaderCollector(Collector):
    """Loader figures from `loader_runs` at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from app.extensions import db
        from app.repositories.loader import loader_totals

        try:
            rows_logged, last_success = loader_totals()
        except SQLAlchemyError:
            # The database does not answer: the request metrics (which matter most right now)
            # are still served; the loader's are left out of this scrape.
            db.session.rollback()
            log.warning("loader metrics left out: the database did not answer", exc_info=True)
            return
        rows = CounterMetricFamily("loader_rows_logged", "Rows the daily loader has logged")
        rows.add_metric([], rows_logged)
        yield rows
        last = GaugeMetricFamily(
            "loader_last_success_timestamp_seconds",
            "When the latest successful loader run finished (Unix time; 0 if never)",
        )
        last.add_metric([], last_success.timestamp() if last_success else 0)
        yield last


# A metric's child for given label values, kept: `labels()` validates the values and takes the
# metric's lock on every call, a few per cent of a cached answer's CPU. Children are never
# removed, so a kept one stays the metric's.
@functools.lru_cache(maxsize=2048)
def _child(metric: Any, *label_values: str) -> Any:
    return metric.labels(*label_values)


def count_request(method: str, endpoint: str, status: int, seconds: float | None) -> None:
    """One answered request."""
    _child(HTTP_REQUESTS, method, endpoint, str(status)).inc()
    if seconds is not None:
        _child(HTTP_LATENCY, method, endpoint).observe(seconds)


def count_cache_lookup(result: str) -> None:
    """One answer of a cached endpoint, by its `X-Cache` (HIT, MISS or BYPASS)."""
    _child(CACHE_LOOKUPS, result.lower()).inc()


def _method() -> str:
    return request.method if request.method in KNOWN_METHODS else "other"


def _endpoint() -> str:
    # The route template, not the raw path: ids in paths would explode the label cardinality.
    return request.url_rule.rule if request.url_rule is not None else "<unmatched>"


def install_metrics(app: APIFlask, settings: Settings) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.get("metrics_started")
        seconds = time.perf_counter() - started if started is not None else None
        count_request(_method(), _endpoint(), response.status_code, seconds)
        cache_result = response.headers.get("X-Cache")
        if cache_result:
            count_cache_lookup(cache_result)
        return response

    @app.get("/metrics")
    @app.doc(hide=True)
    def metrics() -> Response:
        token = settings.metrics_token
        if not token and settings.is_production_like:
            raise NotFound()
        if token:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise Unauthorized("A valid metrics token is required.")
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            process_registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(process_registry)  # type: ignore[no-untyped-call]
        else:
            process_registry = REGISTRY
        loader_registry = CollectorRegistry()
        loader_registry.register(LoaderCollector())
        body = generate_latest(process_registry) + generate_latest(loader_registry)
        return Response(body, mimetype=CONTENT_TYPE_LATEST)
