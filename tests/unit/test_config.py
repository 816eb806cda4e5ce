"""Settings: environment variables, refusal of weak secrets outside development, and the
start-up wait for the database."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from app import create_app
from app.config import DEV_SECRET, MIN_SECRET_LENGTH, AppEnv, Settings, load_settings
from app.database import DatabaseUnavailable, wait_for_database
from app.extensions import db
from tests.conftest import test_settings as settings_for

STRONG = "s" * MIN_SECRET_LENGTH
OTHER_STRONG = "j" * (MIN_SECRET_LENGTH + 8)
UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/nothing_listens_here"
ENV_VARS = (
    "APP_ENV",
    "SECRET_KEY",
    "JWT_SECRET_KEY",
    "DATABASE_URL",
    "DB_STARTUP_RETRIES",
    "DB_STARTUP_BACKOFF_SECONDS",
    "ACCESS_TOKEN_TTL_SECONDS",
    "MAX_PER_PAGE",
    "MAX_JSON_BODY_BYTES",
    "ADMIN_USERNAME",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the variables it sets itself."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def settings(**values: object) -> Settings:
    """Settings from the environment plus `values`, ignoring any developer's .env file."""
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


# --- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [AppEnv.STAGING, AppEnv.PRODUCTION])
@pytest.mark.parametrize(
    "secrets",
    [
        {},  # neither set: the development placeholders
        {"secret_key": STRONG},  # JWT secret missing
        {"jwt_secret_key": STRONG},  # session secret missing
        {"secret_key": DEV_SECRET, "jwt_secret_key": STRONG},
        {"secret_key": STRONG, "jwt_secret_key": DEV_SECRET},
        {"secret_key": "", "jwt_secret_key": STRONG},
        {"secret_key": STRONG, "jwt_secret_key": "change-me"},
        {"secret_key": "s" * (MIN_SECRET_LENGTH - 1), "jwt_secret_key": STRONG},
        {"secret_key": STRONG, "jwt_secret_key": "short"},
    ],
)
def test_staging_and_production_refuse_missing_placeholder_or_short_secrets(
    env: AppEnv, secrets: dict[str, str]
) -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        settings(app_env=env, **secrets)


@pytest.mark.parametrize("env", ["staging", "production"])
def test_staging_and_production_refuse_placeholder_secrets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.setenv("APP_ENV", env)
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("JWT_SECRET_KEY", DEV_SECRET)

    with pytest.raises(ValidationError):
        settings()


@pytest.mark.parametrize("env", [AppEnv.STAGING, AppEnv.PRODUCTION])
def test_staging_and_production_accept_secrets_of_32_characters_or_more(env: AppEnv) -> None:
    loaded = settings(app_env=env, secret_key=STRONG, jwt_secret_key=OTHER_STRONG)

    assert loaded.is_production_like
    assert loaded.secret_key == STRONG
    assert loaded.jwt_secret_key == OTHER_STRONG
    config = loaded.flask_config()
    assert config["DEBUG"] is False
    assert config["TESTING"] is False
    assert config["SECRET_KEY"] == STRONG


@pytest.mark.parametrize("env", [AppEnv.DEVELOPMENT, AppEnv.TESTING])
def test_development_and_testing_accept_the_defaults(env: AppEnv) -> None:
    loaded = settings(app_env=env)

    assert not loaded.is_production_like
    assert loaded.secret_key == DEV_SECRET
    assert loaded.jwt_secret_key == DEV_SECRET
    assert loaded.database_url.startswith("sqlite:///")


def test_the_default_environment_is_development() -> None:
    loaded = settings()

    assert loaded.app_env is AppEnv.DEVELOPMENT
    assert loaded.flask_config()["DEBUG"] is True


# --- environment variables ------------------------------------------------------------------


def test_settings_are_read_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("JWT_SECRET_KEY", OTHER_STRONG)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://svc@db.internal:5432/tasks")
    monkeypatch.setenv("DB_STARTUP_RETRIES", "9")
    monkeypatch.setenv("DB_STARTUP_BACKOFF_SECONDS", "0.25")
    monkeypatch.setenv("ACCESS_TOKEN_TTL_SECONDS", "120")
    monkeypatch.setenv("MAX_JSON_BODY_BYTES", "2048")

    loaded = settings()

    assert loaded.app_env is AppEnv.PRODUCTION
    assert loaded.secret_key == STRONG
    assert loaded.jwt_secret_key == OTHER_STRONG
    assert loaded.database_url == "postgresql+psycopg://svc@db.internal:5432/tasks"
    assert loaded.db_startup_retries == 9
    assert loaded.db_startup_backoff_seconds == 0.25
    assert loaded.access_token_ttl_seconds == 120
    assert loaded.max_json_body_bytes == 2048
    assert loaded.flask_config()["MAX_CONTENT_LENGTH"] == 2048


def test_environment_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("database_url", "sqlite:////tmp/lower-case.db")

    assert settings().database_url == "sqlite:////tmp/lower-case.db"


def test_explicit_values_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/from-env.db")

    assert load_settings(database_url="sqlite:////tmp/explicit.db").database_url == (
        "sqlite:////tmp/explicit.db"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("APP_ENV", "moonbase"), ("DB_STARTUP_RETRIES", "many"), ("ACCESS_TOKEN_TTL_SECONDS", "0")],
)
def test_invalid_environment_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError):
        settings()


def test_postgresql_sessions_use_utc_and_bounded_timeouts() -> None:
    loaded = settings(
        database_url="postgresql+psycopg://u@h/d",
        db_statement_timeout_ms=1234,
        db_connect_timeout_seconds=7,
    )

    options = loaded.flask_config()["SQLALCHEMY_ENGINE_OPTIONS"]
    # Pinged only when idle (app.database), not on every checkout.
    assert "pool_pre_ping" not in options
    assert options["connect_args"]["connect_timeout"] == 7
    assert "timezone=UTC" in options["connect_args"]["options"]
    assert "statement_timeout=1234" in options["connect_args"]["options"]
    assert "max_parallel_workers_per_gather=0" in options["connect_args"]["options"]


def test_errors_do_not_propagate_in_any_environment() -> None:
    for env in AppEnv:
        secrets = {"secret_key": STRONG, "jwt_secret_key": STRONG}
        assert settings(app_env=env, **secrets).flask_config()["PROPAGATE_EXCEPTIONS"] is False


# --- waiting for the database ---------------------------------------------------------------


def test_wait_for_database_retries_with_backoff_then_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(settings_for(UNREACHABLE_PG, db_connect_timeout_seconds=2))
    real_sleep = time.sleep
    delays: list[float] = []

    waiting = threading.current_thread()

    def recording_sleep(seconds: float) -> None:
        if threading.current_thread() is waiting:  # not another test's background thread
            delays.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)  # the real one, recorded
    started = time.monotonic()

    with pytest.raises(DatabaseUnavailable, match="after 3 attempts"):
        wait_for_database(app, retries=3, backoff_seconds=0.01)

    assert time.monotonic() - started < 10
    assert delays == [0.01, 0.02], "exponential backoff between attempts, none after the last"
    with app.app_context():
        db.engine.dispose()


def test_wait_for_database_is_bounded_in_time_for_an_unreachable_server() -> None:
    app = create_app(settings_for(UNREACHABLE_PG, db_connect_timeout_seconds=2))
    started = time.monotonic()

    with pytest.raises(DatabaseUnavailable):
        wait_for_database(app, retries=2, backoff_seconds=0.01)

    assert time.monotonic() - started < 10
    with app.app_context():
        db.engine.dispose()


def test_create_app_waits_for_the_database_when_asked_to() -> None:
    started = time.monotonic()

    with pytest.raises(DatabaseUnavailable):
        create_app(
            settings_for(
                UNREACHABLE_PG,
                db_startup_retries=2,
                db_startup_backoff_seconds=0.01,
                db_connect_timeout_seconds=2,
            )
        )

    assert time.monotonic() - started < 10


def test_wait_for_database_returns_at_once_when_the_database_answers(tmp_path: Path) -> None:
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'up.db'}"))
    started = time.monotonic()

    wait_for_database(app, retries=3, backoff_seconds=5)

    assert time.monotonic() - started < 2
    with app.app_context():
        db.engine.dispose()
