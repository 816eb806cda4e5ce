"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from app.api.rate_limits import limiter
from app.cache.invalidation import current_cache
from app.repositories.health import database_is_reachable

bp = APIBlueprint("health", __name__, tag={"name": "Health", "description": "Probes"})


@bp.get("/health")
@limiter.exempt
@bp.doc(summary="The process is alive", responses={200: "Alive"})
def health() -> dict[str, Any]:
    return {"status": "ok"}


@bp.get("/ready")
@limiter.exempt
@bp.doc(
    summary="Ready to serve: the database answers",
    description="`checks.cache` is `degraded` when the cache store does not answer: requests are "
    "then served from the database (still ready), so it does not make this a 503.",
    responses={200: "Ready", 503: "Not ready"},
)
def ready() -> tuple[dict[str, Any], int]:
    db_ok = database_is_reachable()
    checks = {"database": "ok" if db_ok else "down"}
    cache = current_cache()
    if cache is not None:
        status = cache.status()
        checks["cache"] = "ok" if status.healthy else "degraded"
        checks["cache_backend"] = status.backend
    body = {"status": "ok" if db_ok else "unavailable", "checks": checks}
    return body, 200 if db_ok else 503
