"""bench/api.py serves the ceiling under granian (app.server, as the API) and under gunicorn with
the same workers, and stops every process of a server, workers included, even those whose main
process died first. Real servers on loopback ports, no database."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.api import (
    CEILING_FACTORY,
    Server,
    ServerSettings,
    granian,
    gunicorn,
    http,
    processes,
    start_server,
    stop_server,
    worker_pids,
)

SETTINGS = ServerSettings(workers=2, threads=1)
# What app.server needs to load the app's settings in production (the bench runs it so).
ENV = {
    "APP_ENV": "production",
    "SECRET_KEY": secrets.token_hex(20),
    "JWT_SECRET_KEY": secrets.token_hex(20),
}
Launch = Callable[[int], tuple[list[str], dict[str, str]]]


def granian_ceiling(port: int) -> tuple[list[str], dict[str, str]]:
    return granian(CEILING_FACTORY, port, SETTINGS)


def gunicorn_ceiling(port: int) -> tuple[list[str], dict[str, str]]:
    return gunicorn(f"{CEILING_FACTORY}()", port, SETTINGS)


def group_of(server: Server) -> list[int]:
    return [p.pid for p in processes().values() if p.pgrp == server.proc.pid]


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        stop_server(server)


@pytest.mark.parametrize("launch", [granian_ceiling, gunicorn_ceiling], ids=["granian", "gunicorn"])
def test_a_server_answers_with_the_asked_workers_and_stops_with_all_of_them(
    launch: Launch, servers: list[Server], tmp_path: Path
) -> None:
    server = start_server("ceiling", launch, ENV, SETTINGS, tmp_path, servers)

    status, _, body = http("GET", server.base_url + "/tasks", token="t")
    assert (status, body.startswith(b'{"items":')) == (200, True)
    assert len(worker_pids(server.proc.pid)) == SETTINGS.workers

    stop_server(server)

    assert server.proc.returncode == 0  # a graceful stop
    assert group_of(server) == []


def test_workers_whose_main_process_died_are_stopped_too(
    servers: list[Server], tmp_path: Path
) -> None:
    server = start_server("ceiling", granian_ceiling, ENV, SETTINGS, tmp_path, servers)
    workers = worker_pids(server.proc.pid)
    os.kill(server.proc.pid, signal.SIGKILL)  # no chance to stop its workers
    server.proc.wait()
    assert set(workers) <= set(group_of(server))  # orphaned, still running

    stop_server(server)

    deadline = time.monotonic() + 5  # SIGKILLed processes vanish once reaped by init
    while group_of(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_of(server) == []


def test_a_server_with_another_number_of_workers_is_refused(
    servers: list[Server], tmp_path: Path
) -> None:
    """The API and its ceilings must run the same settings: a server that starts other than the
    asked number of workers (here: a launcher told 1, the bench expecting 2) fails the run."""

    def one_worker(port: int) -> tuple[list[str], dict[str, str]]:
        command, env = granian(CEILING_FACTORY, port, SETTINGS)
        return command, {**env, "GRANIAN_WORKERS": "1"}

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="with 2 worker processes"):
        start_server("ceiling", one_worker, ENV, SETTINGS, tmp_path, servers, timeout=3)
    assert time.monotonic() - start < 30
