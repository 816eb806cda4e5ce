"""Fixtures shared by the job tests that run real processes: a process registry, a Redis server
of the test's own, and a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ThrowawayPostgresDatabase, require_postgres
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
