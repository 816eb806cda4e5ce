"""app.server's defaults for granian: with Redis, one single-threaded worker per core (the threads
of one worker take turns on its interpreter lock); without it one worker (the in-process cache
and limits stay exact) with two threads; loopback, port 5000, 30 s to stop gracefully, failed
workers respawned, no lifetime. The environment overrides each, granian's own variable first."""

from __future__ import annotations

import json
import logging.config
import os
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from app.config import Settings
from app.server import (
    base_url,
    build_app,
    log_config,
    prepare_multiprocess_dir,
    resolve_target,
    server_options,
)

REDIS = "redis://127.0.0.1:6379/0"


SECRETS = {"secret_key": "s" * 40, "jwt_secret_key": "j" * 40}


def options(redis_url: str | None = None, **environ: str) -> dict[str, Any]:
    return server_options(environ, Settings(_env_file=None, redis_url=redis_url, **SECRETS))


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def test_with_redis_there_is_one_single_threaded_worker_per_core() -> None:
    config = options(REDIS)
    assert (config["workers"], config["blocking_threads"]) == (cores(), 1)
    assert config["interface"] == "wsgi"


def test_without_redis_one_worker_keeps_the_in_process_cache_exact() -> None:
    config = options()
    assert (config["workers"], config["blocking_threads"]) == (1, 2)


def test_the_other_defaults() -> None:
    config = options()
    assert (config["address"], config["port"]) == ("127.0.0.1", 5000)
    assert config["workers_kill_timeout"] == 30
    assert config["respawn_failed_workers"] is True
    assert config["workers_lifetime"] is None
    # The app's request line is the access line (it has the user id): granian's is off.
    assert config["log_access"] is False


def test_the_generic_variables_override_the_defaults() -> None:
    config = options(REDIS, WEB_CONCURRENCY="5", HOST="192.0.2.1", PORT="8080")
    assert (config["workers"], config["address"], config["port"]) == (5, "192.0.2.1", 8080)


def test_granians_own_variables_come_first() -> None:
    config = options(
        REDIS,
        WEB_CONCURRENCY="5",
        GRANIAN_WORKERS="3",
        GRANIAN_BLOCKING_THREADS="8",
        HOST="192.0.2.1",
        GRANIAN_HOST="10.0.0.7",
        PORT="8080",
        GRANIAN_PORT="9000",
        GRANIAN_WORKERS_KILL_TIMEOUT="1m",
        GRANIAN_RESPAWN_FAILED_WORKERS="false",
        GRANIAN_WORKERS_LIFETIME="1h30m",
    )
    assert (config["workers"], config["blocking_threads"]) == (3, 8)
    assert (config["address"], config["port"]) == ("10.0.0.7", 9000)
    assert config["workers_kill_timeout"] == 60
    assert config["respawn_failed_workers"] is False
    assert config["workers_lifetime"] == 5400


def test_development_serves_loopback_only_unless_told_otherwise() -> None:
    development = Settings(_env_file=None)  # APP_ENV unset: the known development secrets
    assert server_options({}, development)["address"] == "127.0.0.1"
    for loopback in ("localhost", "127.0.0.2", "::1"):
        assert server_options({"HOST": loopback}, development)["address"] == loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::", "api.example.com"])  # noqa: S104
def test_the_development_secrets_are_never_served_to_the_network(host: str) -> None:
    with pytest.raises(ValueError, match="development secrets"):
        server_options({"HOST": host}, Settings(_env_file=None))
    # Real secrets: told otherwise, it listens where it is told.
    assert server_options({"HOST": host}, Settings(_env_file=None, **SECRETS))["address"] == host


def test_an_empty_variable_counts_as_unset() -> None:
    assert options(GRANIAN_WORKERS="", WEB_CONCURRENCY="4")["workers"] == 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRANIAN_WORKERS", "0"),
        ("WEB_CONCURRENCY", "two"),
        ("GRANIAN_PORT", "70000"),
        ("GRANIAN_RESPAWN_FAILED_WORKERS", "maybe"),
        ("GRANIAN_WORKERS_LIFETIME", "30"),  # granian's minimum is 60 s
    ],
)
def test_a_bad_value_is_refused_with_its_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        options(**{name: value})


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_granians_lines_are_in_the_apps_format(log_format: str) -> None:
    config = log_config(log_format, "WARNING")
    json.dumps(config)  # plain data, as granian's --log-config file would be
    loggers = config["loggers"]
    assert {"_granian", "granian.access", "app.server"} <= set(loggers)
    assert {logger["level"] for logger in loggers.values()} == {"WARNING"}
    # The formatter's factory resolves (without configuring this process's logging).
    formatter = logging.config.DictConfigurator(config).configure_formatter(
        dict(config["formatters"]["app"])
    )
    record = logging.LogRecord("_granian", logging.INFO, __file__, 1, "Starting granian", (), None)
    line = formatter.format(record)
    if log_format == "json":
        assert json.loads(line)["message"] == "Starting granian"
    else:
        assert line.endswith("INFO _granian: Starting granian")


def test_the_log_level_follows_the_apps() -> None:
    config = server_options({}, Settings(_env_file=None, log_level="DEBUG"))
    assert config["log_level"] == "debug"


def test_a_target_is_a_module_and_a_factory() -> None:
    assert resolve_target("app:create_app") is create_app
    for wrong in ("app", "app:", ":create_app", "app:no_such_factory", "no_such_module:f"):
        with pytest.raises(ValueError, match="--target"):
            resolve_target(wrong)
    with pytest.raises(ValueError, match="not callable"):
        resolve_target("app.config:PROJECT_ROOT")


def test_a_worker_that_cannot_build_the_app_exits_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="app.server"), pytest.raises(SystemExit) as stop:
        build_app("app.server:no_such_factory")
    assert stop.value.code == 1
    assert "could not build app.server:no_such_factory" in caplog.text


def test_the_multiprocess_directory_is_made_and_emptied(tmp_path: Path) -> None:
    """prometheus_client requires it emptied of a previous run's files; others stay."""
    directory = tmp_path / "prometheus" / "not-yet"
    prepare_multiprocess_dir(str(directory))
    assert directory.is_dir()
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "histogram_456.db").write_bytes(b"stale")
    (directory / "README").write_text("not ours")
    prepare_multiprocess_dir(str(directory))
    assert sorted(p.name for p in directory.iterdir()) == ["README"]
    prepare_multiprocess_dir(None)  # not in multi-process mode: nothing to do


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:5055"),
        ("0.0.0.0", "http://0.0.0.0:5055"),  # noqa: S104
        ("::1", "http://[::1]:5055"),
        ("localhost", "http://localhost:5055"),
    ],
)
def test_the_banner_url_is_the_address_and_port_bound(address: str, url: str) -> None:
    assert base_url(address, 5055) == url
