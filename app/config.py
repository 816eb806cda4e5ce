"""One typed settings object, read once from the environment.

`APP_ENV` picks the environment (development, testing, staging, production). Everything else comes
from env vars of the same name as the field (upper case). Staging and production refuse to start
with a missing or placeholder secret.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
# Where instance/ (the embedded database, broker, cache and uploads) and .env are: the checkout
# (or the image's WORKDIR) the package runs from; installed from a wheel into site-packages,
# the working directory, so that nothing is written among the installed packages.
PROJECT_ROOT = (
    Path.cwd()
    if PACKAGE_DIR.parent.name in ("site-packages", "dist-packages")
    else PACKAGE_DIR.parent
)
INSTANCE_DIR = PROJECT_ROOT / "instance"

# Values that mark a secret as "not really set": the development defaults and the .env.example text.
DEV_SECRET = "dev-only-secret-change-me-before-deploying-anywhere"  # noqa: S105 (refused outside dev)
PLACEHOLDER_SECRETS = frozenset({"", DEV_SECRET, "change-me", "changeme", "secret"})
MIN_SECRET_LENGTH = 32
# The description of every 422 that lists invalid fields.
VALIDATION_FAILED = "Some fields are invalid; see `errors`."


class AppEnv(StrEnum):
    DEVELOPMENT = "development"
    TESTING = "testing"
    STAGING = "staging"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every setting of the service, with its environment variable and default."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env",
        extra="ignore",
        case_sensitive=False,
        # A refused setting's error must not print the other settings (secrets among them).
        hide_input_in_errors=True,
    )

    app_env: AppEnv = AppEnv.DEVELOPMENT
    secret_key: str = DEV_SECRET
    jwt_secret_key: str = DEV_SECRET

    # Embedded default: a SQLite file under instance/, so the service runs with no servers.
    database_url: str = f"sqlite:///{INSTANCE_DIR / 'mediaamp.db'}"
    db_pool_size: int = 5
    db_max_overflow: int = 10
    db_connect_timeout_seconds: int = 5
    db_statement_timeout_ms: int = 15_000
    # A pooled PostgreSQL connection idle longer than this is pinged before use (a restarted or
    # vanished server is noticed before a request fails on it); busier ones are not, which
    # saves a round trip per request. A connection that fails anyway invalidates the pool.
    db_ping_idle_seconds: float = Field(default=5.0, ge=0)
    # PostgreSQL's parallel helpers per query (max_parallel_workers_per_gather). 0: the service
    # runs many small queries at once, and helper processes for one (a day's count) only take
    # CPU from the others (bench/api.py: the cold date view's p99 fell from ~80 to ~45-65 ms).
    db_parallel_workers_per_query: int = Field(default=0, ge=0)
    db_startup_retries: int = 5
    db_startup_backoff_seconds: float = 0.5

    access_token_ttl_seconds: int = Field(default=15 * 60, gt=0)
    refresh_token_ttl_seconds: int = Field(default=14 * 24 * 3600, gt=0)
    jwt_issuer: str = "mediaamp"

    # argon2id cost; the defaults are the library's (RFC 9106 low-memory profile).
    argon2_time_cost: int = 3
    argon2_memory_cost_kib: int = 65_536
    argon2_parallelism: int = 4

    max_json_body_bytes: int = 1024 * 1024
    # The URL (path and query) and the headers a request may have: past them the app answers
    # 414 or 431 in its JSON error. Kept below the servers' own limits (granian: a 65,534-byte
    # URL, 100 headers; werkzeug's development server: a 65,536-byte line, 100 headers), which
    # would answer first, with an empty or an HTML body.
    max_url_bytes: int = Field(default=16_384, ge=1024, le=60_000)
    max_header_bytes: int = Field(default=16_384, ge=1024, le=60_000)
    max_header_count: int = Field(default=64, ge=16, le=90)
    # Browser origins allowed to call the API (CORS); empty: no CORS headers at all.
    # CORS_ORIGINS: a JSON list or comma-separated, e.g. https://app.example.com,https://x.org
    cors_origins: Annotated[list[str], NoDecode] = []
    max_per_page: int = 100
    # A list's `total` is counted exactly up to this many rows; above, it is PostgreSQL's
    # estimate (`total_is_estimate`), so that no request counts millions of rows.
    count_exact_up_to: int = Field(default=10_000, ge=0)
    default_per_page: int = 20

    # Redis: the Celery broker (and, later, the cache). Unset: the embedded broker below.
    redis_url: str | None = None
    celery_broker_url: str | None = None
    celery_always_eager: bool = False
    # Redis only: a job taken by a worker that died before acking it is redelivered after this.
    celery_visibility_timeout_seconds: int = Field(default=3600, gt=0)
    # Where beat keeps the last run of each schedule (its directory is made if missing).
    celery_beat_schedule: str = str(INSTANCE_DIR / "celerybeat-schedule")

    # Response cache (Redis at REDIS_URL; in-process without it).
    cache_enabled: bool = True
    # auto: Redis with REDIS_URL, else a file store under instance/ shared by all local
    # processes (web, worker, CLI), so every process sees every invalidation. memory: tests.
    cache_backend: str = Field(default="auto", pattern="^(auto|redis|disk|memory)$")
    cache_dir: str = str(INSTANCE_DIR / "cache")
    cache_disk_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    cache_ttl_seconds: int = Field(default=300, gt=0)
    cache_timeout_ms: int = Field(default=50, gt=0)
    cache_retry_after_seconds: float = Field(default=5.0, ge=0)
    cache_max_entries: int = Field(default=10_000, gt=0)
    # Answers larger than this are served but not stored: no caller can fill the cache with a
    # few huge answers.
    cache_max_answer_bytes: int = Field(default=256 * 1024, gt=0)
    # The cache's own Redis (a database or instance with maxmemory and an LRU policy), so that
    # filling it can evict only cached answers, never the broker's jobs or the rate-limit
    # counts. Unset: REDIS_URL.
    cache_redis_url: str | None = None
    # Verified sessions (and access tokens) each process remembers, so hot reads need no auth
    # query (app.auth.session_memory; sessions only with the cache on: its counters guard them).
    session_memory_max_entries: int = Field(default=10_000, gt=0)

    # Rate limits (Flask-Limiter; Redis at REDIS_URL so the server's workers share the counts).
    ratelimit_enabled: bool = True
    ratelimit_auth: str = "10/minute"
    # Every authenticated caller (by user id; anonymous callers by address), on every endpoint.
    # Empty: off.
    ratelimit_default: str | None = "1200/minute"
    # PATCH /me, per user: each wrong current password costs an argon2 check.
    ratelimit_profile: str = "10/minute"
    # Failed logins: RATELIMIT_AUTH per (address, username), and this, looser, per username
    # from any address.
    ratelimit_login_per_username: str = "100/hour"
    ratelimit_storage_url: str | None = None
    # Redis down: fail open (serve, counting per process) rather than refuse every request.
    ratelimit_fail_open: bool = True

    # CSV import: uploads over the size threshold run as a Celery job. UPLOAD_DIR must be shared
    # by the API and the workers (a volume in docker-compose.yml).
    csv_max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    csv_async_threshold_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    csv_batch_rows: int = Field(default=2000, ge=1, le=5000)
    # Connections a background or `flask import-csv` import writes on at once (PostgreSQL).
    csv_import_writers: int = Field(default=2, ge=1, le=8)
    upload_dir: str = str(INSTANCE_DIR / "uploads")
    # Per uploaded file: data rows, and the accounts its unknown assignees may create.
    csv_max_rows_per_file: int = Field(default=200_000, gt=0)
    csv_max_new_accounts_per_file: int = Field(default=100, ge=0)

    # The daily task loader.
    daily_log_time_utc: str = Field(default="00:05", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    loader_chunk_size: int = Field(default=50_000, gt=0)
    # Days of task log kept: beat prunes older ones daily (`flask logs prune`); 0 keeps all.
    log_retention_days: int = Field(default=0, ge=0)
    loader_max_catchup_days: int = Field(default=7, ge=1, le=366)
    loader_catchup_check_minutes: int = Field(default=15, ge=1, le=59)
    # A running run with no chunk done for this long is resumed by the next scheduled check.
    loader_stall_minutes: int = Field(default=10, ge=1)

    # Observability. Logs: JSON lines for machines to parse, or text for people (the request
    # id on each line either way). Unset: text in development (`make run`), else JSON.
    log_format: str = Field(default="", pattern="^(json|text)?$")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    # The app's own log line per request (logger app.request): the access log, with the request
    # id and the user id (the server's own access log is off: app/server.py).
    request_log: bool = True
    metrics_token: str | None = None

    # HTTP: how many proxies in front of the app set X-Forwarded-For/-Proto/-Host (werkzeug's
    # ProxyFix); 0: the peer's address is the client's. And the URL clients reach the API at,
    # for absolute links (`Link` headers); unset: links are relative, never built from `Host`.
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    external_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")

    admin_username: str | None = None
    admin_email: str | None = None
    admin_password: str | None = None

    @field_validator("external_url", "cache_redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # docker compose passes `${EXTERNAL_URL:-}` through as an empty string.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @property
    def celery_broker(self) -> str:
        """CELERY_BROKER_URL, else REDIS_URL, else a SQLite-file broker that needs no server."""
        return (
            self.celery_broker_url
            or self.redis_url
            or f"sqla+sqlite:///{INSTANCE_DIR / 'celery-broker.sqlite'}"
        )

    @property
    def ratelimit_storage(self) -> str:
        return self.ratelimit_storage_url or self.redis_url or "memory://"

    @property
    def is_production_like(self) -> bool:
        return self.app_env in (AppEnv.STAGING, AppEnv.PRODUCTION)

    @model_validator(mode="after")
    def _log_format_for_the_environment(self) -> Settings:
        if not self.log_format:
            self.log_format = "text" if self.app_env == AppEnv.DEVELOPMENT else "json"
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if not self.is_production_like:
            return self
        for name in ("secret_key", "jwt_secret_key"):
            value = getattr(self, name)
            if value in PLACEHOLDER_SECRETS or len(value) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"{name.upper()} must be set to a random value of at least "
                    f"{MIN_SECRET_LENGTH} characters when APP_ENV={self.app_env.value}"
                )
        return self

    def flask_config(self) -> dict[str, Any]:
        """The Flask/extension configuration derived from these settings."""
        is_sqlite = self.database_url.startswith("sqlite")
        engine_options: dict[str, Any] = {}
        if is_sqlite:
            engine_options.update(pool_pre_ping=True, connect_args={"timeout": 15})
        else:
            # Pinged by app.database only when idle for a while (DB_PING_IDLE_SECONDS).
            engine_options.update(
                pool_size=self.db_pool_size,
                max_overflow=self.db_max_overflow,
                pool_timeout=self.db_connect_timeout_seconds,
                connect_args={
                    "connect_timeout": self.db_connect_timeout_seconds,
                    # A server that vanishes without closing the connection (host down, network
                    # cut) is noticed within ~30 s instead of the kernel's ~15 min: a request
                    # waiting on it fails (503) rather than hang. statement_timeout below bounds a
                    # slow statement on a live server.
                    "keepalives": 1,
                    "keepalives_idle": 10,
                    "keepalives_interval": 5,
                    "keepalives_count": 4,
                    "tcp_user_timeout": 30_000,  # ms: sent data left unacknowledged
                    # UTC sessions so that date arithmetic in SQL is UTC, whatever the server says.
                    "options": (
                        f"-c timezone=UTC -c statement_timeout={self.db_statement_timeout_ms} "
                        "-c max_parallel_workers_per_gather="
                        f"{self.db_parallel_workers_per_query}"
                    ),
                },
            )
        production_like = self.is_production_like
        return {
            "APP_ENV": self.app_env.value,
            "DEBUG": self.app_env == AppEnv.DEVELOPMENT,
            # No cookie carries auth (bearer tokens do), but any that appears is HTTPS-only.
            "SESSION_COOKIE_SECURE": production_like,
            "SESSION_COOKIE_HTTPONLY": True,
            "PREFERRED_URL_SCHEME": "https" if production_like else "http",
            "TESTING": self.app_env == AppEnv.TESTING,
            "PROPAGATE_EXCEPTIONS": False,
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
            "MAX_CONTENT_LENGTH": self.max_json_body_bytes,
            "VALIDATION_ERROR_DESCRIPTION": VALIDATION_FAILED,
            "SETTINGS": self,
        }


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (used by tests and tools)."""
    return Settings(**overrides)
