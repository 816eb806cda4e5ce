"""Swagger UI served from the app itself (assets from the flask-swagger-ui package): no CDN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import Blueprint

from app.schemas.common import ErrorOut

SWAGGER_UI_DIST = Path(flask_swagger_ui.__file__).parent / "dist"
STATIC_URL = "/apidocs/static"

bp = Blueprint(
    "swagger_assets", __name__, static_folder=str(SWAGGER_UI_DIST), static_url_path=STATIC_URL
)


def error_schema(*, title: str, errors_required: bool = False) -> dict[str, Any]:
    """The OpenAPI schema of the error body the app really sends (`app.api.errors`), in place of
    APIFlask's default `{detail, message}`, which no response of this app has. Each variant has
    a title of its own: client generators name their models by it."""
    schema = ErrorOut.model_json_schema()
    schema["title"] = title
    schema["properties"]["errors"] = {
        "type": "object",
        "description": "Messages per location (`json`, `query`, ...) and per field",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "example": {"json": {"task_name": ["String should have at least 1 character"]}},
    }
    if errors_required:
        schema["required"] = [*schema["required"], "errors"]
    return schema


def docs_config() -> dict[str, Any]:
    return {
        "HTTP_ERROR_SCHEMA": error_schema(title="HTTPError"),
        "VALIDATION_ERROR_SCHEMA": error_schema(title="ValidationError", errors_required=True),
        # The error answers are documented by rule in app.api.spec.errors, one text for each.
        "AUTO_AUTH_ERROR_RESPONSE": False,
        "AUTO_404_RESPONSE": False,
        "AUTO_VALIDATION_ERROR_RESPONSE": False,
        "SWAGGER_UI_CSS": f"{STATIC_URL}/swagger-ui.css",
        "SWAGGER_UI_BUNDLE_JS": f"{STATIC_URL}/swagger-ui-bundle.js",
        "SWAGGER_UI_STANDALONE_PRESET_JS": f"{STATIC_URL}/swagger-ui-standalone-preset.js",
        "DOCS_FAVICON": f"{STATIC_URL}/favicon-32x32.png",
        # Keep the token across page reloads so the Authorize button is used once.
        "SWAGGER_UI_CONFIG": {"persistAuthorization": True, "displayRequestDuration": True},
        "INFO": {
            "description": (
                "Role-based task management. Log in with `POST /login`, then press **Authorize** "
                "and paste the `access_token`. Every error has the shape "
                "`{code, message, description, errors?}`."
            )
        },
    }
