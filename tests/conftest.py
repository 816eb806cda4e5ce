"""Shared fixtures: the app on each database backend, a clean database per test, and users.

Every API test runs twice: on PostgreSQL (a throwaway database created for this run, schema built
by the Alembic migrations) and on SQLite (a temporary file). Set `TEST_DATABASE_URL` to point at
another PostgreSQL server; with `REQUIRE_SERVICES=1` a missing PostgreSQL fails the run instead of
skipping its lane.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from apiflask import APIFlask
from celery import _state as celery_state
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app import create_app
from app.cache.store import GLOBAL_GENERATION
from app.config import AppEnv, Settings
from app.extensions import db
from app.models import Role, Task, TaskPriority, TaskStatus, User
from app.models.types import utcnow
from app.services.context import passwords

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
TEST_PASSWORD = "correct horse battery"
TABLES_CHILD_FIRST = (
    "loader_chunks",
    "loader_runs",
    "jobs",
    "idempotency_keys",
    "task_logger",
    "refresh_tokens",
    "token_families",
    "task_audit",
    "task_manager",
    "users",
)


def test_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for tests: cheap argon2 (hashing cost is not under test), no start-up wait."""
    values: dict[str, object] = {
        "app_env": AppEnv.TESTING,
        "database_url": database_url,
        "secret_key": "test-secret-key-that-is-long-enough-0123",
        "jwt_secret_key": "test-jwt-secret-key-that-is-long-enough-0123",
        "argon2_time_cost": 1,
        "argon2_memory_cost_kib": 1024,
        "argon2_parallelism": 1,
        "db_startup_retries": 0,
        # API tests run queued jobs in-process; tests/jobs/ run real workers and brokers.
        "celery_always_eager": True,
        # One process per test app: the in-process cache keeps tests isolated and fast; a test
        # that gives a REDIS_URL gets the Redis cache.
        "cache_backend": "redis" if overrides.get("redis_url") else "memory",
        # Limits are off unless a test turns them on.
        "ratelimit_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def postgres_server_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG_URL)


def postgres_available() -> bool:
    engine = create_engine(postgres_server_url(), connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def require_postgres() -> None:
    if not postgres_available():
        message = f"PostgreSQL is not reachable at {postgres_server_url()}"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (REQUIRE_SERVICES=1)")
        pytest.skip(message)


class ThrowawayPostgresDatabase:
    """A database of its own on the test server, dropped at the end."""

    def __init__(self, prefix: str = "mediaamp_test") -> None:
        self.server_url = make_url(postgres_server_url())
        self.name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.url = self.server_url.set(database=self.name).render_as_string(hide_password=False)

    def _admin(self) -> object:
        return create_engine(self.server_url, isolation_level="AUTOCOMMIT")

    def create(self) -> str:
        engine = self._admin()
        with engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        engine.dispose()  # type: ignore[attr-defined]
        return self.url

    def drop(self) -> None:
        engine = self._admin()
        with engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def app(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[APIFlask]:
    """The app with its schema built by the migrations (`flask db upgrade`)."""
    throwaway: ThrowawayPostgresDatabase | None = None
    if backend == "postgresql":
        require_postgres()
        throwaway = ThrowawayPostgresDatabase()
        url = throwaway.create()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    application = create_app(test_settings(url))
    with application.app_context():
        upgrade()
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
    if throwaway is not None:
        throwaway.drop()


@pytest.fixture(autouse=True)
def _clean_database(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts from empty tables (truncation: tests may commit, as requests do)."""
    yield
    if "app" not in request.fixturenames:
        return
    application: APIFlask = request.getfixturevalue("app")
    with application.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    text(f"TRUNCATE {', '.join(TABLES_CHILD_FIRST)} RESTART IDENTITY CASCADE")
                )
            else:
                for table in TABLES_CHILD_FIRST:
                    conn.execute(text(f"DELETE FROM {table}"))
        # Ids restart, so an answer cached by this test could match the next test's data.
        cache = application.extensions.get("response_cache")
        if cache is not None:
            cache.bump([GLOBAL_GENERATION])


@pytest.fixture
def client(app: APIFlask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def app_context(app: APIFlask) -> Iterator[None]:
    with app.app_context():
        yield


@dataclass
class Account:
    id: int
    username: str
    role: Role
    password: str = TEST_PASSWORD


@pytest.fixture
def make_user(app: APIFlask) -> Callable[..., Account]:
    """Create an account directly in the database (any role, active or not)."""

    def _make(username: str, role: Role = Role.USER, *, is_active: bool = True) -> Account:
        with app.app_context():
            user = User(
                username=username,
                email=f"{username}@example.com",
                password_hash=passwords().hash(TEST_PASSWORD),
                role=role,
                is_active=is_active,
            )
            db.session.add(user)
            db.session.commit()
            return Account(id=user.id, username=username, role=role)

    return _make


@pytest.fixture
def login(client: FlaskClient) -> Callable[[Account], dict[str, str]]:
    """Log an account in through the API; returns its Authorization header."""

    def _login(account: Account) -> dict[str, str]:
        response = client.post(
            "/login", json={"username": account.username, "password": account.password}
        )
        assert response.status_code == 200, response.json
        return {"Authorization": f"Bearer {response.json['access_token']}"}

    return _login


@pytest.fixture
def admin(make_user: Callable[..., Account]) -> Account:
    return make_user("root_admin", Role.ADMIN)


@pytest.fixture
def moderator(make_user: Callable[..., Account]) -> Account:
    return make_user("mod_mary", Role.MODERATOR)


@pytest.fixture
def alice(make_user: Callable[..., Account]) -> Account:
    return make_user("alice", Role.USER)


@pytest.fixture
def bob(make_user: Callable[..., Account]) -> Account:
    return make_user("bob", Role.USER)


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def add_tasks(app: APIFlask, owner: Account, count: int, description: str | None = None) -> None:
    """`count` live tasks created by `owner` ("task 0", ...), written to the database directly
    (bypassing the API's rules, e.g. for descriptions it would refuse)."""
    with app.app_context():
        now = utcnow()
        db.session.add_all(
            Task(
                task_name=f"task {n}",
                description=description,
                status=TaskStatus.ACTIVE,
                priority=TaskPriority.MEDIUM,
                created_by_id=owner.id,
                created_at=now,
                updated_at=now,
            )
            for n in range(count)
        )
        db.session.commit()


@contextlib.contextmanager
def side_app(settings: Settings) -> Iterator[APIFlask]:
    """`create_app(settings)` for the length of a block. Every `create_app()` makes its Celery app
    the process's current one, where shared jobs send their sub-jobs (the loader's chunks): put
    back the one before, so jobs queued by the `app` fixture still run (and invalidate its cache)
    in that app. The engine is disposed of at the end."""
    default, current = celery_state.default_app, getattr(celery_state._tls, "current_app", None)
    try:
        application = create_app(settings)
    finally:
        celery_state.set_default_app(default)
        celery_state._set_current_app(current)
    try:
        yield application
    finally:
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


MakeApp = Callable[..., APIFlask]


@pytest.fixture
def make_app(app: APIFlask) -> Iterator[MakeApp]:
    """Other apps on the `app` fixture's database, each with settings of its own (keyword
    overrides of `test_settings`), until the end of the test (`side_app`)."""
    with contextlib.ExitStack() as stack:

        def _make(**overrides: object) -> APIFlask:
            settings = test_settings(app.config["SQLALCHEMY_DATABASE_URI"], **overrides)
            return stack.enter_context(side_app(settings))

        yield _make
