"""The embedded default's cache (no Redis) is a file store shared by every local process, so a
write made by another process (the Celery worker, a CLI command) invalidates the web process's
cached answers at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

from apiflask import APIFlask

from app import create_app
from app.extensions import db
from app.models import Task, TaskStatus
from tests.conftest import PROJECT_ROOT, Account
from tests.conftest import test_settings as settings_for

DAY = date(2031, 2, 3)


def test_a_load_in_another_process_invalidates_the_web_processs_cached_day(
    app: APIFlask,
    tmp_path: Path,
    admin: Account,
    login: Callable[[Account], dict[str, str]],
) -> None:
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    cache_dir = tmp_path / "cache"
    web = create_app(settings_for(url, cache_backend="disk", cache_dir=str(cache_dir)))
    with web.app_context():
        db.session.add_all(
            Task(task_name=f"t{i}", status=TaskStatus.ACTIVE, created_by_id=admin.id)
            for i in range(3)
        )
        db.session.commit()
    client = web.test_client()
    headers = login(admin)
    path = f"/tasks?date={DAY.isoformat()}"
    first = client.get(path, headers=headers)
    assert first.status_code == 200, first.json
    assert first.json["total"] == 0
    cached = client.get(path, headers=headers)
    assert (cached.headers["X-Cache"], cached.json["total"]) == ("HIT", 0)

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "APP_ENV": "testing",
        "CACHE_BACKEND": "disk",
        "CACHE_DIR": str(cache_dir),
        "DB_STARTUP_RETRIES": "0",
        "LOG_FORMAT": "text",
    }
    loaded = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "load-daily", "--date", DAY.isoformat()],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]

    fresh = client.get(path, headers=headers)
    assert (fresh.headers["X-Cache"], fresh.json["total"]) == ("MISS", 3)
