"""Fixtures shared by the job tests that run real processes: a process registry, a Redis server
of the test's own, and a throwaway PostgreSQL database."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from apiflask import APIFlask
from celery import _state as celery_state
from flask_migrate import upgrade

from app import create_app
from app.config import Settings
from app.extensions import db
from app.models import Role, User
from app.services.context import passwords
from tests.conftest import TEST_PASSWORD, ThrowawayPostgresDatabase, require_postgres
from tests.jobs.test_celery_e2e import Services, free_port, skip_or_fail, wait_until


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    logs = tmp_path / "logs"
    logs.mkdir()
    registry = Services(logs)
    try:
        yield registry
    finally:
        registry.stop_all()
        # Captured output: pytest prints it for a failed test only.
        print(registry.outputs())


@pytest.fixture
def redis_url(services: Services, tmp_path: Path) -> str:
    """A Redis server of this test's own (no persistence), so parallel runs never share a queue."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
    assert binary is not None
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(tmp_path)]
    services.start("redis", args, dict(os.environ))
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_until(answers, "redis-server answering", services, timeout=10)
    client.close()
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_postgres()
    throwaway = ThrowawayPostgresDatabase(prefix="mediaamp_jobs")
    url = throwaway.create()
    try:
        yield url
    finally:
        throwaway.drop()


@contextlib.contextmanager
def web_app(settings: Settings, admin: str) -> Iterator[APIFlask]:
    """The API side of a test with real workers, for the length of a block: its schema migrated
    and an admin named `admin` (password TEST_PASSWORD). Its Celery app is made the current one
    by create_app(): the one before is put back after."""
    default, current = celery_state.default_app, getattr(celery_state._tls, "current_app", None)
    application = create_app(settings)
    with application.app_context():
        upgrade()
        db.session.add(
            User(
                username=admin,
                email=f"{admin}@example.com",
                password_hash=passwords().hash(TEST_PASSWORD),
                role=Role.ADMIN,
            )
        )
        db.session.commit()
    try:
        yield application
    finally:
        application.extensions["celery"].close()
        with application.app_context():
            db.session.remove()
            db.engine.dispose()
        celery_state.set_default_app(default)
        celery_state._set_current_app(current)
