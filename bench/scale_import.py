"""bench/scale.py's import at size: (h) a CSV file of --import-rows tasks imported by
`flask import-csv` into the seeded table, against raw COPYs of the same rows.

Three timings, each in the same run and on the same database:
  - COPY of the file into a table of text columns: the issue's baseline, the cost of reading
    the bytes into PostgreSQL (no validation, no indexes);
  - COPY of the same rows, as typed task rows, straight into task_manager, in a transaction
    that is rolled back: the floor that the table's own indexes and constraints set for any
    import, with no validation, dedup or audit;
  - `flask import-csv` (a process of its own, whose peak RSS is read): validation, dedup,
    assignee matching and one audit entry per task, as the upload's job runs it; on one
    connection, then on two (CSV_IMPORT_WRITERS).
The rows each import made are deleted after it and the tables vacuumed, so that the next one
starts from the seeded table and a database kept with --keep is left as it was. Assignees are
the seeded users: no account is made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, create_engine, text

from bench.csv_import import generate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMPORT_TARGET_ROWS_PER_S = 30_000
IMPORT_RSS_TARGET_MB = 200.0
ASSIGNEES = [f"user{n:05d}" for n in range(1, 201)]  # seeded by bench/scale.py
CSV_COLUMNS = ("task_name", "description", "status", "priority", "created_at", "assigned_user")
# The file's rows as the import stores them, for the floor's COPY (its spellings normalised).
TYPED_FROM_TEXT = """
SELECT c.task_name, nullif(c.description, ''),
       CASE WHEN lower(c.status) IN ('true', '1', 'yes') THEN 'active' ELSE 'inactive' END,
       upper(c.priority), u.id, 1,
       CASE WHEN c.created_at LIKE '%/%' THEN to_date(c.created_at, 'MM/DD/YYYY')
            ELSE c.created_at::date END::timestamptz,
       now(), md5(c.task_name) || md5(c.created_at), 1
FROM csv_text c LEFT JOIN users u ON u.username = nullif(c.assigned_user, '')
"""
TASK_COLUMNS = (
    "task_name, description, status, priority, assigned_user_id, created_by_id, created_at, "
    "updated_at, import_key, version"
)


WRITERS = (1, 2)


@dataclass
class ImportResult:
    rows: int
    text_copy_s: float
    table_copy_s: float
    import_s: dict[int, float]  # writers -> seconds
    created: dict[int, int]
    import_rss_mb: dict[int, float]


def _copy_file(conn: Connection, path: Path) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    sql = f"COPY csv_text ({', '.join(CSV_COLUMNS)}) FROM STDIN (FORMAT csv, HEADER)"
    with driver.cursor() as cursor, cursor.copy(sql) as copy, path.open("rb") as source:
        while block := source.read(1024 * 1024):
            copy.write(block)


def _copy_into_tasks(conn: Connection, tmp: Path) -> float:
    """The typed rows written out, then COPied into task_manager (rolled back): seconds."""
    typed = tmp / "typed.tsv"
    driver = conn.connection.driver_connection
    assert driver is not None
    with (
        driver.cursor() as cursor,
        typed.open("wb") as out,
        cursor.copy(f"COPY ({TYPED_FROM_TEXT}) TO STDOUT") as copy,
    ):
        for block in copy:
            out.write(block)
    with driver.transaction(force_rollback=True), driver.cursor() as cursor:
        start = time.perf_counter()
        with (
            cursor.copy(f"COPY task_manager ({TASK_COLUMNS}) FROM STDIN") as copy,
            typed.open("rb") as source,
        ):
            while block := source.read(1024 * 1024):
                copy.write(block)
        seconds = time.perf_counter() - start
    typed.unlink()
    return seconds


def _import(path: Path, env: dict[str, str], rows: int, writers: int) -> tuple[float, float, str]:
    """`flask import-csv` in a process of its own: (seconds, peak RSS in MB, its output)."""
    command = [sys.executable, "-m", "flask", "import-csv", str(path), "--as", "admin"]
    caps = {
        "CSV_MAX_ROWS_PER_FILE": str(rows),
        "CSV_IMPORT_WRITERS": str(writers),
        "FLASK_APP": "app",
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env={**os.environ, **env, **caps},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"flask import-csv failed ({proc.returncode}):\n{output[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def measure_import(url: str, env: dict[str, str], tmp: Path, rows: int) -> ImportResult:
    path = tmp / "tasks.csv"
    generate(path, rows, assignees=ASSIGNEES)
    print(f"  (h) {rows:,} rows, {path.stat().st_size / 1024 / 1024:.0f} MB", flush=True)
    engine = create_engine(
        url, isolation_level="AUTOCOMMIT", connect_args={"options": "-c statement_timeout=0"}
    )
    with engine.connect() as conn:
        conn.execute(text(f"CREATE TEMPORARY TABLE csv_text ({' text, '.join(CSV_COLUMNS)} text)"))
        conn.execute(text("CHECKPOINT"))
        start = time.perf_counter()
        _copy_file(conn, path)
        text_copy_s = time.perf_counter() - start
        print(f"  (h) COPY into a text table        {text_copy_s:8.1f} s", flush=True)
        table_copy_s = _copy_into_tasks(conn, tmp)
        print(f"  (h) COPY into task_manager        {table_copy_s:8.1f} s", flush=True)
        conn.execute(text("DROP TABLE csv_text"))
        conn.execute(text("VACUUM task_manager"))  # the rolled-back rows' index entries
        conn.execute(text("CHECKPOINT"))
        result = ImportResult(rows, text_copy_s, table_copy_s, {}, {}, {})
        for writers in WRITERS:
            seconds, rss_mb, output = _import(path, env, rows, writers)
            created = conn.execute(
                text("SELECT count(*) FROM task_manager WHERE import_key IS NOT NULL")
            ).scalar_one()
            print(
                f"  (h) flask import-csv, {writers} writer(s) {seconds:8.1f} s  {created:,} "
                f"created, peak RSS {rss_mb:.0f} MB",
                flush=True,
            )
            if created != rows:
                print(output[-2000:])
            result.import_s[writers], result.created[writers] = seconds, created
            result.import_rss_mb[writers] = rss_mb
            start = time.perf_counter()
            conn.execute(text("DELETE FROM task_manager WHERE import_key IS NOT NULL"))
            conn.execute(text("VACUUM ANALYZE task_manager"))
            conn.execute(text("VACUUM ANALYZE task_audit"))
            conn.execute(text("CHECKPOINT"))
            print(f"  (h) imported rows deleted, vacuumed {time.perf_counter() - start:8.1f} s")
    engine.dispose()
    path.unlink()
    return result


def report_import(tasks: int, result: ImportResult) -> bool:
    ok = True
    print(
        f"{tasks:>10,} tasks: (h) {result.rows:,} rows: COPY into a text table "
        f"{result.rows / result.text_copy_s:,.0f} rows/s, COPY into task_manager "
        f"{result.rows / result.table_copy_s:,.0f} rows/s"
    )
    for writers, seconds in result.import_s.items():
        rate = result.rows / seconds
        rate_ok = rate >= IMPORT_TARGET_ROWS_PER_S and result.created[writers] == result.rows
        rss = result.import_rss_mb[writers]
        rss_ok = rss < IMPORT_RSS_TARGET_MB
        ok = ok and rate_ok and rss_ok
        print(
            f"{'':>17}flask import-csv on {writers} connection(s): {rate:,.0f} rows/s "
            f"({seconds / result.table_copy_s:.2f}x the time of the table's COPY; >= "
            f"{IMPORT_TARGET_ROWS_PER_S:,}: {'PASS' if rate_ok else 'FAIL'}), peak RSS {rss:.0f} "
            f"MB (< {IMPORT_RSS_TARGET_MB:g}: {'PASS' if rss_ok else 'FAIL'})"
        )
    return ok
