"""The ceiling for bench/api.py: a bare Flask app with no database, cache or auth library.

    python -m app.server --target bench.ceiling_app:create_app     (as the API is served)
    gunicorn -k gthread --workers 2 --threads 1 "bench.ceiling_app:create_app()"   (reference)

Every path answers a JSON page like GET /tasks?per_page=20: 20 task-like items and the page
fields, serialised on each request by the API's own JSON provider (app.api.json_provider, in the
same mode as the API's, so the bodies match byte for byte). A request without
`Authorization: Bearer <something>` gets a 401.

CEILING_PAGE_FILE names a JSON file holding a real page of the API (bench/api.py saves one) to
serve as is; without it a synthetic page of the same shape is built. CEILING_JSON=flask keeps
Flask's own JSON provider (the standard library's json), for reference. APP_ENV=development turns on
Flask's debug mode, as it does for the API (it changes how JSON is formatted: indented);
bench/api.py runs both as production (compact).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

from app.api.json_provider import install_json

PRIORITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def synthetic_page(per_page: int = 20, total: int = 100_000) -> dict[str, Any]:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    items = []
    for i in range(total, total - per_page, -1):
        created = (now - timedelta(minutes=i)).isoformat()
        items.append(
            {
                "id": i,
                "task_name": f"task {i}",
                "description": f"description of task {i}" if i % 2 else None,
                "status": "inactive" if i % 5 == 0 else "active",
                "priority": PRIORITIES[i % 4],
                "assigned_user_id": 2 + i % 200,
                "created_by_id": 2 + (i + 1) % 200,
                "created_at": created,
                "updated_at": created,
                "deleted_at": None,
                "due_date": None if i % 3 == 0 else "2030-02-01",
                "log": None,
            }
        )
    pages = -(-total // per_page)
    return {"items": items, "page": 1, "per_page": per_page, "total": total, "pages": pages}


def load_page() -> dict[str, Any]:
    path = os.environ.get("CEILING_PAGE_FILE")
    if path:
        page: dict[str, Any] = json.loads(Path(path).read_text())
        return page
    return synthetic_page()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["DEBUG"] = os.environ.get("APP_ENV", "development") == "development"
    if os.environ.get("CEILING_JSON") != "flask":  # "flask": Flask's own provider, for reference
        install_json(app)  # the API's serialiser: the ceiling measures what the API could at best
    page = load_page()

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.get("/", defaults={"path": ""})
    @app.get("/<path:path>")
    def tasks(path: str) -> tuple[Response, int] | Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return jsonify(code=401, message="Unauthorized"), 401
        return jsonify(page)

    return app
