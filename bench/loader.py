"""Daily loader benchmark against raw SQL, on PostgreSQL.

    .venv/bin/python -m bench.loader [--tasks 1000000] [--chunk-size 50000]

Seeds N tasks (90% active) in a throwaway database with one server-side statement, then times in
the same run:
  (a) the raw baseline: one INSERT ... SELECT ... ON CONFLICT DO NOTHING for day A;
  (b) our loader (chunked, with run/chunk bookkeeping) for day B;
  (c) both again on the same days, where every row is skipped;
and prints the times, the ratios loader/raw and the peak RSS of this (the loading) process.
Targets: first run <= 1.3 x raw, re-run <= 1.3 x raw re-run, peak RSS < 200 MB at 1M tasks.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from datetime import date

from flask_migrate import upgrade
from sqlalchemy import text

from bench.common import DEFAULT_SERVER, make_log_partitions, throwaway_database

DAY_RAW = date(2030, 1, 1)
DAY_LOADER = date(2030, 1, 2)

RAW_SQL = text(
    """
    INSERT INTO task_logger (task_id, log_date, status, priority, assigned_user_id, created_at,
                             task_created_at)
    SELECT id, :day, status, priority, assigned_user_id, now(), created_at
    FROM task_manager
    WHERE status = 'active' AND deleted_at IS NULL
    ON CONFLICT (task_id, log_date) DO NOTHING
    """
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    elapsed = time.perf_counter() - start
    print(f"  {label:<44} {elapsed:8.2f} s")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    args = parser.parse_args()

    with throwaway_database(args.server) as url:
        os.environ.update(
            DATABASE_URL=url,
            APP_ENV="testing",
            LOADER_CHUNK_SIZE=str(args.chunk_size),
            DB_STARTUP_RETRIES="0",
        )
        run(url, args.tasks)


def run(url: str, tasks: int) -> None:
    from app import create_app
    from app.extensions import db
    from app.services import loader

    app = create_app()
    with app.app_context():
        upgrade()
        print(f"seeding {tasks:,} tasks (90% active) ...")
        with db.engine.begin() as conn:
            # Seeding is the bench's, not a request: the app's statement timeout does not apply.
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(
                text(
                    "INSERT INTO users (username, email, role, is_active, created_at, updated_at) "
                    "VALUES ('bench', 'bench@example.com', 'user', true, now(), now())"
                )
            )
            conn.execute(
                text(
                    """
                    INSERT INTO task_manager (task_name, status, priority, assigned_user_id,
                                              created_by_id, created_at, updated_at)
                    SELECT 'task ' || g,
                           CASE WHEN g % 10 = 0 THEN 'inactive' ELSE 'active' END,
                           (ARRAY['LOW','MEDIUM','HIGH','CRITICAL'])[1 + g % 4], 1, 1, now(), now()
                    FROM generate_series(1, :n) AS g
                    """
                ),
                {"n": tasks},
            )
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))

        with db.engine.begin() as conn:  # the loader makes its day's month; the raw SQL not
            make_log_partitions(conn, DAY_RAW, DAY_RAW)

        def raw() -> None:
            with db.engine.begin() as conn:
                conn.execute(text("SET LOCAL statement_timeout = 0"))  # one statement, all rows
                conn.execute(RAW_SQL, {"day": DAY_RAW})

        def ours() -> None:
            run = loader.run_inline(DAY_LOADER, "bench")
            assert run.state.value == "succeeded", run.error

        rss_before = peak_rss_mb()
        print(f"timing (chunk size {os.environ['LOADER_CHUNK_SIZE']}):")
        raw_first = timed("(a) raw INSERT ... SELECT, first run", raw)
        ours_first = timed("(b) loader, first run", ours)
        raw_again = timed("(c) raw re-run (all skipped)", raw)
        ours_again = timed("(c) loader re-run (all skipped)", ours)

        counts = db.session.execute(
            text("SELECT log_date, count(*) FROM task_logger GROUP BY log_date ORDER BY 1")
        ).all()
        assert counts[0][1] == counts[1][1], counts  # both paths logged the same rows
        print(f"rows logged per day: {counts[0][1]:,} (raw) / {counts[1][1]:,} (loader)")
        print(f"first run: loader / raw = {ours_first / raw_first:.2f}  (target <= 1.3)")
        print(f"re-run:    loader / raw = {ours_again / raw_again:.2f}  (target <= 1.3)")
        print(
            f"peak RSS of this process: {peak_rss_mb():.0f} MB "
            f"(before loading: {rss_before:.0f} MB; target < 200 MB)"
        )


if __name__ == "__main__":
    main()
