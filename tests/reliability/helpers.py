"""Helpers for fault tests: throwaway `redis-server` and PostgreSQL servers on free local ports,
that a test can kill, restart on the same port, or make hang (CLIENT PAUSE), stopped in teardown
whatever happened. Extra apps on the test database: `side_app` in tests/conftest.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from bench.ram_postgres import postgres_binaries as find_postgres_binaries
from tests.conftest import REQUIRE_SERVICES

START_TIMEOUT = 10.0  # seconds for a started server to answer PING


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

    def __init__(self, binary: str, directory: Path, extra_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.directory = directory
        self.extra_args = list(extra_args)
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
                    *self.extra_args,
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
def running_redis(directory: Path, extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), directory, extra_args)
    server.start()
    try:
        yield server
    finally:
        server.kill()


PG_START_TIMEOUT = 20  # seconds for pg_ctl start/stop (crash recovery included)


def postgres_binaries() -> Path:
    """The directory of `initdb` and `pg_ctl` (found as bench/ram_postgres.py finds them)."""
    try:
        return find_postgres_binaries()
    except RuntimeError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"{exc} (REQUIRE_SERVICES=1)")
        pytest.skip(str(exc))


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb, trust auth) on a free local port, that a test can
    stop (`pg_ctl stop -m immediate`: every backend killed, as in a crash) and start again on the
    same port. PostgreSQL refuses to run as root: as root, every command runs as `postgres`."""

    def __init__(self, bin_dir: Path, directory: Path) -> None:
        self.bin_dir = bin_dir
        self.directory = directory  # owned by the user that runs the server
        self.data_dir = directory / "data"
        self.log_path = directory / "server.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def as_server_user(argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, *argv: str, timeout: float = PG_START_TIMEOUT) -> None:
        completed = subprocess.run(
            self.as_server_user([str(self.bin_dir / argv[0]), *argv[1:]]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout + 5,
            check=False,
        )
        if completed.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            output = (completed.stdout + completed.stderr).decode(errors="replace")
            pytest.fail(f"{' '.join(argv[:1])} failed ({completed.returncode}):\n{output}\n{log}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory}"
        )
        self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
            "-t", str(PG_START_TIMEOUT), "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w",
                  "-t", str(PG_START_TIMEOUT))  # fmt: skip

    def ensure_stopped(self) -> None:
        """Teardown: stop the server whatever state it is in (a last resort: SIGKILL)."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        subprocess.run(
            self.as_server_user(
                [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate"]
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PG_START_TIMEOUT,
            check=False,
        )
        if pid_file.exists():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started cluster; stopped and its directory deleted at the end, whatever happened. The
    directory is under the system temp dir, not pytest's (private to root, unreadable to the
    `postgres` user)."""
    bin_dir = postgres_binaries()
    directory = Path(tempfile.mkdtemp(prefix="pg-fault-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        server = PostgresServer(bin_dir, directory)
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.ensure_stopped()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
