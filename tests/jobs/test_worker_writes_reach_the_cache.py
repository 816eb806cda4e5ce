"""A write made by a Celery worker process (a loader run, a CSV import job) is seen at once by
the web process's Redis-backed cache: the worker's commit bumps the generations in the same
Redis, so the web's cached answers from before the job are never served after it. A real worker
process, a real redis-server (broker and cache) and a throwaway PostgreSQL database."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from tests.conftest import TEST_PASSWORD
from tests.conftest import test_settings as settings_for
from tests.jobs.conftest import web_app
from tests.jobs.test_celery_e2e import Services, start_worker, wait_until, worker_env

ADMIN = "cache_admin"
DAY = date(2031, 2, 3)


@pytest.fixture
def web(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[APIFlask]:
    """The web side: its cache and its queue in the test's Redis, jobs run by the worker."""
    settings = settings_for(
        postgres_url,
        redis_url=redis_url,
        celery_always_eager=False,
        upload_dir=str(tmp_path),
        csv_async_threshold_bytes=16,
    )
    with web_app(settings, ADMIN) as application:
        assert application.extensions["response_cache"].backend.name == "redis"
        yield application


def _get(client: FlaskClient, path: str, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert isinstance(body, dict)
    return response.headers["X-Cache"], body


def test_a_workers_loader_run_and_import_are_seen_at_once_by_the_web_cache(
    web: APIFlask, services: Services, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    start_worker(
        services, worker_env(postgres_url, redis_url, REDIS_URL=redis_url, UPLOAD_DIR=str(tmp_path))
    )
    client = web.test_client()
    tokens = client.post("/login", json={"username": ADMIN, "password": TEST_PASSWORD}).json
    assert tokens is not None
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    for n in range(3):
        created = client.post("/task", json={"task_name": f"before {n}"}, headers=headers)
        assert created.status_code == 201
    day_view = f"/tasks?date={DAY.isoformat()}"
    for path in (day_view, "/tasks"):
        _get(client, path, headers)
        assert _get(client, path, headers)[0] == "HIT", f"{path} is warm before the jobs"

    def finished(status_url: str) -> Any:
        def check() -> bool:
            body = client.get(status_url, headers=headers).get_json()
            assert body["state"] != "failed", body
            return bool(body["state"] == "succeeded")

        return check

    queued = client.post("/admin/jobs/daily-log", json={"date": DAY.isoformat()}, headers=headers)
    assert queued.status_code == 202, queued.data
    wait_until(finished(queued.headers["Location"]), "the worker's loader run", services)
    x_cache, day = _get(client, day_view, headers)
    assert (x_cache, day["total"]) == ("MISS", 3), "the worker's run reached the web's cache"

    csv = (
        b"task_name,description,status,priority,created_at,assigned_user\n"
        b"imported one,,TRUE,HIGH,2025-01-02,\n"
        b"imported two,,TRUE,LOW,2025-01-03,\n"
    )
    uploaded = client.post(
        "/upload-csv", data={"file": (io.BytesIO(csv), "two.csv")}, headers=headers
    )
    assert uploaded.status_code == 202, uploaded.data
    wait_until(finished(uploaded.headers["Location"]), "the worker's import", services)
    x_cache, listed = _get(client, "/tasks", headers)
    assert (x_cache, listed["total"]) == ("MISS", 5), "the worker's import reached the cache"
    assert {"imported one", "imported two"} <= {item["task_name"] for item in listed["items"]}
