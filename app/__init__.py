"""MediaAmp task backend: the app factory."""

from __future__ import annotations

from pathlib import Path

from apiflask import APIFlask

from app import (
    database,
    models,  # noqa: F401  (registers every table on the metadata)
)
from app.api import (  # noqa: F401  (current_user registers the token callbacks)
    admin,
    admin_jobs,
    auth,
    current_user,
    docs,
    health,
    http,
    imports,
    logs,
    tasks,
)
from app.api.errors import register_error_handlers
from app.api.json_provider import install_json
from app.api.rate_limits import init_rate_limits
from app.api.spec import install as install_openapi_completion
from app.auth.tokens import VerifiedTokens
from app.cache.setup import init_cache
from app.config import INSTANCE_DIR, PACKAGE_DIR, Settings, load_settings
from app.extensions import db, migrate
from app.jobs.celery_app import init_celery
from app.observability.logging import configure_logging, install_request_logging
from app.observability.metrics import install_metrics
from app.repositories import log_partitions

__version__ = "0.1.0"
# The Alembic migrations: the copy a wheel ships inside the package (pyproject.toml), else the
# repository's, beside the package (a checkout, the image).
MIGRATIONS_DIR = (
    PACKAGE_DIR / "migrations"
    if (PACKAGE_DIR / "migrations").is_dir()
    else PACKAGE_DIR.parent / "migrations"
)


def create_app(settings: Settings | None = None) -> APIFlask:
    """Build the app from `settings` (default: read from the environment)."""
    settings = settings or load_settings()
    app = APIFlask(
        __name__,
        title="MediaAmp Task API",
        version=__version__,
        docs_path="/apidocs",
        spec_path="/openapi.json",
        instance_path=str(INSTANCE_DIR),  # Flask's own default, except for an installed wheel
    )
    app.config.update(settings.flask_config())
    install_json(app)
    app.config.update(docs.docs_config())
    configure_logging(settings.log_format, settings.log_level)

    if settings.database_url.startswith("sqlite"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    database.install_connection_rules(app, settings.db_ping_idle_seconds)
    migrate.init_app(
        app,
        db,
        directory=str(MIGRATIONS_DIR),
        include_name=log_partitions.compared_by_autogenerate,
    )

    install_request_logging(app)  # first: every later hook and handler logs with the request id
    install_metrics(app, settings)
    http.install(app)
    register_error_handlers(app)
    for blueprint in (auth.bp, tasks.bp, logs.bp, imports.bp, admin.bp, admin_jobs.bp, health.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(docs.bp)
    install_openapi_completion(app)

    init_cache(app, settings)
    app.extensions["verified_tokens"] = VerifiedTokens(settings.session_memory_max_entries)
    init_rate_limits(app, settings)
    init_celery(app, settings)
    from app.cli import register_commands

    register_commands(app)

    if settings.db_startup_retries > 0:
        database.wait_for_database(
            app, settings.db_startup_retries, settings.db_startup_backoff_seconds
        )
    return app
