"""CSV import benchmark against a raw PostgreSQL COPY.

    .venv/bin/python -m bench.csv_import [--rows 100000] [--batch-rows 2000] [--writers 2]

Generates a CSV file of N task rows (about 200 assignees, every status spelling, priorities in
any case, M/D/YYYY and ISO 8601 dates) in a temporary file and, in a throwaway database built by
the migrations, times in the same process:
  (a) the baseline: a raw COPY of the file into a scratch table of text columns (no validation,
      no audit, no users);
  (b) our import (`app.services.csv_import.import_tasks`, as an admin): streaming parse, per-row
      validation, placeholder users, batched idempotent inserts and one audit row per task, on
      one connection;
  (c) the same on --writers connections at once (CSV_IMPORT_WRITERS), after the tasks and audit
      rows of (b) are truncated (its placeholder users stay, and are matched);
and prints rows/s of each, the ratios and the peak RSS of this process.
Targets: (b) and (c) >= 10,000 rows/s including validation and audit rows; (c) at least 1.2x
(b)'s rate (what a second path of writing must gain); peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from flask_migrate import upgrade
from sqlalchemy import text

from bench.common import DEFAULT_SERVER, throwaway_database

HEADER = ("task_name", "description", "status", "priority", "created_at", "assigned_user")
STATUSES = ("TRUE", "FALSE", "true", "1", "0", "yes", "No", "False")
PRIORITIES = ("LOW", "medium", "High", "CRITICAL", "low", "MEDIUM", "HIGH")
ASSIGNEES = 200
TARGET_ROWS_PER_S = 10_000
TARGET_RSS_MB = 200
TARGET_GAIN = 1.2


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, rows: int, assignees: Sequence[str] = ()) -> None:
    """Row i: a unique name, `assignees` round-robin (default: ASSIGNEES unknown names) with
    every 10th row unassigned, mixed spellings."""
    names = list(assignees) or [f"assignee_{n:03d}" for n in range(ASSIGNEES)]
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for i in range(rows):
            month, day = 1 + i % 12, 1 + i % 28
            created = f"{month}/{day}/2025" if i % 2 else f"2025-{month:02d}-{day:02d}"
            writer.writerow(
                (
                    f"Imported task {i}",
                    f"Description of task {i}, with a comma" if i % 3 else "",
                    STATUSES[i % len(STATUSES)],
                    PRIORITIES[i % len(PRIORITIES)],
                    created,
                    "" if i % 10 == 0 else names[i % len(names)],
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    args = parser.parse_args()

    with throwaway_database(args.server) as url:
        os.environ.update(
            DATABASE_URL=url,
            APP_ENV="testing",
            CSV_BATCH_ROWS=str(args.batch_rows),
            DB_STARTUP_RETRIES="0",
            CACHE_ENABLED="false",
            # The file names ASSIGNEES unknown accounts, all to be created (the default cap,
            # 100 a file, would fail the rest of their rows).
            CSV_MAX_NEW_ACCOUNTS_PER_FILE=str(ASSIGNEES),
        )
        os.environ.pop("REDIS_URL", None)
        with tempfile.TemporaryDirectory(prefix="bench_csv_") as directory:
            path = Path(directory) / "tasks.csv"
            generate(path, args.rows)
            size_mb = path.stat().st_size / 1024 / 1024
            print(f"generated {args.rows:,} rows ({size_mb:.1f} MB) in {path.name}")
            run(path, args.rows, args.batch_rows, args.writers)


def run(path: Path, rows: int, batch_rows: int, writers: int) -> None:
    from app import create_app
    from app.extensions import db
    from app.models import Role, User
    from app.services import csv_import

    app = create_app()
    with app.app_context():
        upgrade()
        actor = User(username="bench_admin", email="bench@example.com", role=Role.ADMIN)
        db.session.add(actor)
        db.session.commit()
        actor_id = actor.id
        columns = ", ".join(f"{column} text" for column in HEADER)
        with db.engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE csv_scratch ({columns})"))

        def raw_copy() -> None:
            connection = db.engine.raw_connection()
            try:
                cursor = connection.driver_connection.cursor()  # type: ignore[union-attr]
                sql = f"COPY csv_scratch ({', '.join(HEADER)}) FROM STDIN (FORMAT csv, HEADER)"
                with path.open("rb") as source, cursor.copy(sql) as copy:
                    while block := source.read(1024 * 1024):
                        copy.write(block)
                connection.commit()
            finally:
                connection.close()

        def imported(label: str, on: int) -> float:
            """Time one import on `on` connections into empty task tables; its seconds."""
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("TRUNCATE task_manager, task_audit CASCADE"))
                conn.execute(text("VACUUM ANALYZE task_manager, task_audit"))
                conn.execute(text("CHECKPOINT"))
            importer = db.session.get(User, actor_id)
            start = time.perf_counter()
            with path.open("rb") as stream:
                report = csv_import.import_tasks(
                    stream, importer, batch_size=batch_rows, writers=on
                )
            seconds = time.perf_counter() - start
            print(
                f"  {label:<43}{seconds:8.2f} s  {report.created:,} created, "
                f"{report.failed} failed, {report.users_created} users created"
            )
            tasks, audit = db.session.execute(
                text(
                    "SELECT (SELECT count(*) FROM task_manager), (SELECT count(*) FROM task_audit)"
                )
            ).one()
            db.session.remove()
            assert report.created == rows == tasks == audit, (report, tasks, audit)
            return seconds

        rss_before = peak_rss_mb()
        print(f"timing ({rows:,} rows, batch {batch_rows}):")
        start = time.perf_counter()
        raw_copy()
        raw_s = time.perf_counter() - start
        copied = db.session.execute(text("SELECT count(*) FROM csv_scratch")).scalar_one()
        assert copied == rows
        print(f"  {'(a) raw COPY into a text table':<43}{raw_s:8.2f} s  {copied:,} rows")
        one_s = imported("(b) import_tasks, 1 connection", 1)
        many_s = imported(f"(c) import_tasks, {writers} connections", writers)

        rss = peak_rss_mb()
        rss_ok = rss < TARGET_RSS_MB
        ok = rss_ok
        print(f"raw COPY:            {rows / raw_s:10,.0f} rows/s")
        for label, seconds in (("1 connection", one_s), (f"{writers} connections", many_s)):
            rate_ok = rows / seconds >= TARGET_ROWS_PER_S
            ok = ok and rate_ok
            print(
                f"import, {label:<13}{rows / seconds:10,.0f} rows/s  ({seconds / raw_s:.1f}x "
                f"the time of COPY; >= {TARGET_ROWS_PER_S:,}: {'PASS' if rate_ok else 'FAIL'})"
            )
        gain = one_s / many_s
        ok = ok and gain >= TARGET_GAIN
        print(
            f"{writers} connections against 1: {gain:.2f}x the rate "
            f"(>= {TARGET_GAIN}: {'PASS' if gain >= TARGET_GAIN else 'FAIL'})"
        )
        print(
            f"peak RSS of this process: {rss:.0f} MB (before timing: {rss_before:.0f} MB; "
            f"target < {TARGET_RSS_MB} MB) {'PASS' if rss_ok else 'FAIL'}"
        )
        print("overall:", "PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
