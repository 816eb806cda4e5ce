"""Helpers for tests that build apps of their own: a throwaway `redis-server` on a free local port
(that a test can kill, restart on the same port, or make hang with CLIENT PAUSE; stopped in
teardown whatever happened), and `side_app`, an extra app that leaves the process's state alone."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from apiflask import APIFlask
from celery import _state as celery_state

from app import create_app
from app.config import Settings
from app.extensions import db
from tests.conftest import REQUIRE_SERVICES

START_TIMEOUT = 10.0  # seconds for a started server to answer PING


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return binary


class RedisServer:
    """One redis-server process at a time on a fixed port; no persistence (`--save ''`)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, "already running"
        self.starts += 1
        log_path = self.directory / f"redis-{self.port}-{self.starts}.log"
        with log_path.open("wb") as log_file:
            self.popen = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace")
                pytest.fail(f"redis-server did not start on port {self.port}:\n{output}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, with everything it held."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def pause(self, milliseconds: int) -> None:
        """Every client's commands hang for `milliseconds` (the data stays)."""
        self.client().client_pause(milliseconds)

    def wait_unpaused(self, timeout: float = 10.0) -> None:
        """Returns once the server answers again (a command sent while paused waits for the end)."""
        assert self.client(timeout).ping()


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()
