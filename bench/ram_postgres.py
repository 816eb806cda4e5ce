"""A throwaway PostgreSQL whose files (WAL included) live in RAM, for bench/api.py's
`--postgres-on-ram`: the same server settings as the machine's PostgreSQL, without its disk.

A commit waits for its WAL to reach the disk (synchronous_commit, which the service keeps on:
an answered write must survive a crash). On a disk whose flushes stall now and then, every
write in flight meanwhile waits, and write latency shows the disk rather than the service; run
against this server, the same benchmark tells the two apart. It measures nothing durable: a
diagnostic, never the reported figure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RAM_DIR = Path("/dev/shm")  # noqa: S108 (tmpfs is the point; mkdtemp makes a private dir in it)
# The settings the machine's PostgreSQL changes from the defaults that matter here (the rest
# are initdb's defaults on both): no autovacuum.
SERVER_OPTIONS = "-c autovacuum=off -c listen_addresses=127.0.0.1"


def postgres_binaries() -> Path:
    """The directory of `initdb` and `pg_ctl`: PATH first, then the Debian layout."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise RuntimeError("initdb/pg_ctl are not installed (Debian: postgresql)")


def _as_server_user(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def ram_postgres() -> Iterator[str]:
    """The URL of a started server whose cluster is on tmpfs; stopped and deleted at the end."""
    if not RAM_DIR.is_dir():
        raise RuntimeError(f"--postgres-on-ram needs a tmpfs at {RAM_DIR}")
    bin_dir = postgres_binaries()
    directory = Path(tempfile.mkdtemp(prefix="bench-pg-", dir=RAM_DIR))
    data = directory / "data"
    port = _free_port()
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        run = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        subprocess.run(
            _as_server_user([*run, "--no-instructions"]), check=True, capture_output=True
        )
        options = f"-p {port} -c unix_socket_directories={directory} {SERVER_OPTIONS}"
        start = [str(bin_dir / "pg_ctl"), "start", "-w", "-D", str(data), "-o", options]
        log = ["-l", str(directory / "server.log")]
        subprocess.run(_as_server_user([*start, *log]), check=True, capture_output=True)
        print(f"PostgreSQL on RAM: {directory} (port {port}), dropped at the end")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            stop = [str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"]
            subprocess.run(_as_server_user(stop), check=False, capture_output=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
