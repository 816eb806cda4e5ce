"""gunicorn.conf.py's worker defaults: with Redis, one single-threaded worker per core
(bench/api.py: the threads of one worker take turns on its interpreter lock); without it one
worker (the in-process cache stays exact) with two threads; the environment overrides each."""

from __future__ import annotations

import multiprocessing
import runpy
from pathlib import Path
from typing import Any

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in ("REDIS_URL", "WEB_CONCURRENCY", "GUNICORN_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REQUEST_LOG", "true")  # the config sets a default; keep the test's env
    return runpy.run_path(str(CONFIG))


def test_with_redis_there_is_one_single_threaded_worker_per_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = settings(monkeypatch, REDIS_URL="redis://127.0.0.1:6379/0")
    assert config["workers"] == multiprocessing.cpu_count()
    assert config["threads"] == 1
    assert config["worker_class"] == "gthread"  # keep-alive connections, even with one thread


def test_without_redis_one_worker_keeps_the_in_process_cache_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = settings(monkeypatch)
    assert (config["workers"], config["threads"]) == (1, 2)


def test_the_environment_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(
        monkeypatch, REDIS_URL="redis://127.0.0.1:6379/0", WEB_CONCURRENCY="5", GUNICORN_THREADS="8"
    )
    assert (config["workers"], config["threads"]) == (5, 8)
