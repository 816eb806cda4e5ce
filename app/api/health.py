"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from app.repositories.health import database_is_reachable

bp = APIBlueprint("health", __name__, tag={"name": "Health", "description": "Probes"})


@bp.get("/health")
@bp.doc(summary="The process is alive", responses={200: "Alive"})
def health() -> dict[str, Any]:
    return {"status": "ok"}


@bp.get("/ready")
@bp.doc(summary="Ready to serve: the database answers", responses={200: "Ready", 503: "Not ready"})
def ready() -> tuple[dict[str, Any], int]:
    db_ok = database_is_reachable()
    body = {
        "status": "ok" if db_ok else "unavailable",
        "checks": {"database": "ok" if db_ok else "down"},
    }
    return body, 200 if db_ok else 503
