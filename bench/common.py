"""Pieces shared by the benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

from app.repositories.log_partitions import create_partition_sql, month_of, next_month

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def throwaway_database(server_url: str, prefix: str = "mediaamp_bench") -> Iterator[str]:
    """A database of its own on the server (its URL), dropped at the end whatever happens."""
    server = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin: Engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    print(f"database: {name} (dropped at the end)")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        print(f"dropped database {name}")


def make_log_partitions(conn: Connection, first_day: date, last_day: date) -> None:
    """task_logger's monthly partitions for the days from `first_day` to `last_day` (PostgreSQL,
    migration 0012): the app's loader makes its own days' months, a benchmark's seeding SQL
    does not."""
    month = month_of(first_day)
    while month <= last_day:
        conn.execute(text(create_partition_sql(month, if_not_exists=True)))
        month = next_month(month)


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    """Each live process's peak RSS (VmHWM) in MB, by pid."""
    peaks: dict[int, float] = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = int(line.split()[1]) / 1024
    return peaks
