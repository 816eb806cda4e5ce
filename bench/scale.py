"""Scale benchmark: the same reads at 100,000 and at 10,000,000 tasks, under the production server.

    .venv/bin/python -m bench.scale [--tasks 10000000] [--small 100000] [--users 2000]
                                    [--log-days 3] [--keep] [--requests 1000] [--only a,c,e]
                                    [--import-rows 1000000]

Not run in CI (seeding 10M tasks takes minutes and several GB). Needs PostgreSQL
(BENCH_DATABASE_URL or --server) and wrk on PATH. For each size, small first:

  1. a database `mediaamp_scale_<N>` on the server, seeded once and, with --keep, reused by
     later runs (a table `bench_seed` records what was seeded, with the schema's revision: a
     database seeded for another size or revision is seeded again). Seeding: the migrations,
     then the secondary indexes of task_manager and task_logger dropped, N tasks (90% active,
     mixed priorities, --users users round-robin, created over a year, a rare search term in one
     task of 100,000 and a common one in one of 10) and --log-days days of log rows inserted by
     one statement each, then the indexes built again and VACUUM ANALYZE. Seeding runs on its
     own connection, without the app's statement timeout;
  2. the API as deployed (`python -m app.server`: granian, one worker per core) with the cache
     OFF (CACHE_ENABLED=false: every answer comes from the database, the worst case this
     benchmark is about; with --cache, ON, as deployed) and rate limits off; the Redis of
     --redis-url (a database number this script may FLUSHDB) is the jobs' broker and, with
     --cache, the cache. Meanwhile a writer changes a random task every --write-interval
     seconds (0.1) through the API, so lists are read right after writes;
  3. each scenario with wrk (16 connections) until it has made at least --requests answers:
     (a) the first page as admin and as a user; (b) the first cursor page and a cursor page at
     depth min(5,000,000, N/2) (its cursor minted with the server's key for the row at that
     depth); (c) `q` for a rare and a common term; (d) the date view's first page, and a cursor
     page halfway through the day; (e) `sort=task_name` and `sort=-priority` first pages;
  4. the peak RSS (VmHWM) of every server process and of this one;
  5. the jobs (bench/scale_jobs.py; `--only f` or `g` runs them without the reads): (f) the
     daily load of every active task by raw `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, then
     by the loader through `POST /admin/jobs/daily-log` on 1 and on 2 Celery workers, each a day
     of January 2001; (g) `flask logs prune` of that month;
  6. (h) a CSV file of --import-rows tasks (1,000,000) imported by `flask import-csv`, against a
     raw COPY of the file into a text table and of its rows straight into task_manager
     (bench/scale_import.py; `--only h`); the imported tasks are deleted afterwards.

It prints p50 and p99 per scenario and size, and PASS/FAIL against the targets: p99 < 50 ms at
the large size, at most 1.5x its p99 at the small size, no non-2xx answer, every process's peak
RSS < 300 MB; the load on 1 worker at most 1.3x the raw SQL's time, faster on 2; the import
at >= 30,000 rows/s with a peak RSS < 200 MB. Without --keep
it drops its databases at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bench.api import (
    DEFAULT_REDIS,
    PASSWORD,
    Server,
    ServerSettings,
    WrkOptions,
    WrkResult,
    granian,
    http,
    login,
    parse_wrk,
    processes,
    run_wrk,
    start_server,
    stop_server,
)
from bench.common import DEFAULT_SERVER, make_log_partitions, peak_rss_mb
from bench.scale_import import ImportResult, measure_import, report_import
from bench.scale_jobs import JobsResult, measure_jobs, report_jobs

TABLES = ("task_manager", "task_logger")
RARE_TERM = "zebraquartz"  # in one task of RARE_EVERY
RARE_EVERY = 100_000
COMMON_TERM = "report"  # in the description of one task of COMMON_EVERY
COMMON_EVERY = 10
P99_TARGET_MS = 50.0
GROWTH_TARGET = 1.5
RSS_TARGET_MB = 300.0


# --- seeding -----------------------------------------------------------------------------------


def database_url(server_url: str, tasks: int) -> str:
    return (
        make_url(server_url)
        .set(database=f"mediaamp_scale_{tasks}")
        .render_as_string(hide_password=False)
    )


def admin_engine(server_url: str) -> Engine:
    return create_engine(make_url(server_url), isolation_level="AUTOCOMMIT")


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option(
        "script_location", str(Path(__file__).resolve().parent.parent / "migrations")
    )
    head = ScriptDirectory.from_config(config).get_current_head()
    return head or ""


def seeded_as(url: str) -> tuple[int, int, int, str] | None:
    """What the database at `url` was seeded with (tasks, users, log days, revision), if it was."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT tasks, users, log_days, revision FROM bench_seed")
            ).one_or_none()
            return None if row is None else (row[0], row[1], row[2], row[3])
    except SQLAlchemyError:  # no such database or table: not seeded
        return None
    finally:
        engine.dispose()


def recreate_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    engine = admin_engine(server_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def drop_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    engine = admin_engine(server_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
    print(f"dropped database {name}")


def migrate(url: str) -> None:
    from flask_migrate import upgrade

    from app import create_app
    from app.config import load_settings

    app = create_app(
        load_settings(database_url=url, app_env="testing", redis_url=None, db_startup_retries=0)
    )
    with app.app_context():
        upgrade()
        from app.extensions import db

        db.engine.dispose()


def timed(engine: Engine, label: str, sql: str, params: dict[str, object] | None = None) -> None:
    """Run one statement and print how long it took."""
    start = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(text(sql), params or {})
    print(f"  {label:<58} {time.perf_counter() - start:8.1f} s", flush=True)


SEED_USERS = """
INSERT INTO users (username, email, password_hash, role, is_active, created_at, updated_at)
SELECT name, name || '@bench.example.com', :hash, CASE WHEN g = 0 THEN 'admin' ELSE 'user' END,
       true, now(), now()
FROM generate_series(0, :users) AS g,
     LATERAL (SELECT CASE WHEN g = 0 THEN 'admin' ELSE 'user' || lpad(g::text, 5, '0') END
             AS name) n
"""

# 90% active; priorities cycle apart from status; assignee and creator round-robin over the users
# (never the admin, id 1); created over the past year; due dates for two tasks of three.
SEED_TASKS = f"""
INSERT INTO task_manager (task_name, description, status, priority, assigned_user_id,
                          created_by_id, created_at, updated_at, due_date, version)
SELECT CASE WHEN g % {RARE_EVERY} = 0 THEN 'task {RARE_TERM} ' || g ELSE 'task ' || g END,
       CASE WHEN g % {COMMON_EVERY} = 0 THEN 'weekly {COMMON_TERM} of task ' || g
            WHEN g % 2 = 0 THEN NULL ELSE 'description of task ' || g END,
       CASE WHEN g % 10 = 0 THEN 'inactive' ELSE 'active' END,
       (ARRAY['LOW','MEDIUM','HIGH','CRITICAL'])[1 + (g / 10) % 4],
       2 + g % :users, 2 + (g + 1) % :users,
       t.ts, t.ts,
       CASE WHEN g % 3 = 0 THEN NULL ELSE current_date + (g % 120) - 60 END,
       1
FROM generate_series(1, :tasks) AS g,
     LATERAL (SELECT now() - ((g::bigint * 7919) % (365 * 86400)) * interval '1 second' AS ts) t
"""

SEED_LOG = """
INSERT INTO task_logger (task_id, log_date, status, priority, assigned_user_id, created_at,
                         task_created_at)
SELECT id, current_date - :back, status, priority, assigned_user_id,
       (current_date - :back) + interval '5 minutes', created_at
FROM task_manager WHERE status = 'active' AND deleted_at IS NULL
"""


def secondary_indexes(engine: Engine) -> list[str]:
    """The CREATE INDEX statements of the tables' indexes that back no constraint. A
    partitioned table's index reads `ON ONLY <table>` (the parent alone, invalid until each
    partition's index is attached): without ONLY it is built on every partition too."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT i.indexdef FROM pg_indexes i
                WHERE i.tablename = ANY(:tables) AND i.schemaname = 'public'
                  AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                  WHERE c.conname = i.indexname)
                """
            ),
            {"tables": list(TABLES)},
        )
        return [row[0].replace(" ON ONLY ", " ON ", 1) for row in rows]


def seed(server_url: str, url: str, tasks: int, users: int, log_days: int) -> None:
    from app.auth.passwords import PasswordService

    recreate_database(server_url, url)
    start = time.perf_counter()
    migrate(url)
    print(f"  {'migrate':<58} {time.perf_counter() - start:8.1f} s")
    # Its own connections: no statement timeout, more memory for the index builds.
    engine = create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        connect_args={"options": "-c statement_timeout=0 -c maintenance_work_mem=512MB"},
    )
    indexes = secondary_indexes(engine)
    with engine.connect() as conn:
        for definition in indexes:
            name = definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0]
            conn.execute(text(f"DROP INDEX {name}"))
    password_hash = PasswordService(1, 1024, 1).hash(PASSWORD)
    timed(
        engine, f"{users:,} users and an admin", SEED_USERS, {"hash": password_hash, "users": users}
    )
    timed(engine, f"{tasks:,} tasks", SEED_TASKS, {"tasks": tasks, "users": users})
    with engine.connect() as conn:
        today = conn.execute(text("SELECT current_date")).scalar_one()
        make_log_partitions(conn, today - timedelta(days=log_days), today)
    for back in range(log_days, 0, -1):
        timed(engine, f"log of day -{back}", SEED_LOG, {"back": back})
    start = time.perf_counter()
    with engine.connect() as conn:
        for definition in indexes:
            conn.execute(text(definition))
    print(f"  {f'{len(indexes)} indexes built again':<58} {time.perf_counter() - start:8.1f} s")
    timed(engine, "VACUUM ANALYZE", "VACUUM ANALYZE")
    timed(engine, "CHECKPOINT", "CHECKPOINT")
    with engine.connect() as conn:
        conn.execute(
            text("CREATE TABLE bench_seed (tasks bigint, users int, log_days int, revision text)")
        )
        conn.execute(
            text("INSERT INTO bench_seed VALUES (:tasks, :users, :log_days, :revision)"),
            {"tasks": tasks, "users": users, "log_days": log_days, "revision": head_revision()},
        )
    engine.dispose()


def ensure_seeded(server_url: str, tasks: int, users: int, log_days: int, keep: bool) -> str:
    url = database_url(server_url, tasks)
    wanted = (tasks, users, log_days, head_revision())
    if keep and seeded_as(url) == wanted:
        print(f"reusing {make_url(url).database} ({tasks:,} tasks, --keep)")
        return url
    print(
        f"seeding {make_url(url).database}: {tasks:,} tasks, {users:,} users, {log_days} log days"
    )
    seed(server_url, url, tasks, users, log_days)
    return url


# --- load ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    as_admin: bool = True


@dataclass(frozen=True)
class Deep:
    """Cursors at depth, minted for the server's key."""

    depth: int
    list_cursor: str
    day_depth: int
    day_cursor: str


def mint_cursor(secret_key: str, params: dict[str, object], position: tuple[object, ...]) -> str:
    """The cursor the API would give for the page after `position` (the default order's sort
    key values: created_at, then id) of the question `params`."""
    from flask import Flask

    from app.api.cursors import issue_cursor
    from app.schemas.tasks import TaskListQuery

    question = TaskListQuery.model_validate({**params, "limit": 20}).question()
    with Flask(__name__).app_context() as context:
        context.app.config["SECRET_KEY"] = secret_key
        return issue_cursor(position, question)


def deep_cursors(url: str, tasks: int, log_day: str, secret_key: str) -> Deep:
    depth = min(5_000_000, tasks // 2)
    engine = create_engine(url, connect_args={"options": "-c statement_timeout=0"})
    with engine.connect() as conn:
        listed = conn.execute(
            text(
                "SELECT created_at, id FROM task_manager WHERE deleted_at IS NULL "
                "ORDER BY created_at DESC, id DESC OFFSET :depth LIMIT 1"
            ),
            {"depth": depth},
        ).one()
        day_count = conn.execute(
            text("SELECT count(*) FROM task_logger WHERE log_date = :day"), {"day": log_day}
        ).scalar_one()
        day_depth = day_count // 2
        logged = conn.execute(
            text(
                "SELECT task_created_at, task_id FROM task_logger WHERE log_date = :day "
                "ORDER BY task_created_at DESC, task_id DESC OFFSET :depth LIMIT 1"
            ),
            {"day": log_day, "depth": day_depth},
        ).one()
    engine.dispose()
    return Deep(
        depth,
        mint_cursor(secret_key, {}, tuple(listed)),
        day_depth,
        mint_cursor(secret_key, {"date": log_day}, tuple(logged)),
    )


def scenarios(log_day: str, deep: Deep) -> list[Scenario]:
    return [
        Scenario("(a) first page, admin", "/tasks?per_page=20"),
        Scenario("(a) first page, user", "/tasks?per_page=20", as_admin=False),
        Scenario("(b) cursor, first page", "/tasks?limit=20"),
        Scenario("(b) cursor, deep page", f"/tasks?limit=20&cursor={deep.list_cursor}"),
        Scenario("(c) q, a rare term", f"/tasks?q={RARE_TERM}"),
        Scenario("(c) q, a common term", f"/tasks?q={COMMON_TERM}"),
        Scenario("(d) date view, first page", f"/tasks?date={log_day}"),
        Scenario(
            "(d) date view, deep cursor page",
            f"/tasks?date={log_day}&limit=20&cursor={deep.day_cursor}",
        ),
        Scenario("(e) sort=task_name, first page", "/tasks?sort=task_name"),
        Scenario("(e) sort=-priority, first page", "/tasks?sort=-priority"),
    ]


@contextmanager
def writer(base_url: str, token: str, tasks: int, interval: float) -> Iterator[list[int]]:
    """A PUT of a random task every `interval` seconds while the block runs; yields the
    statuses it got (a list it appends to)."""
    statuses: list[int] = []
    stop = threading.Event()
    rng = random.Random(7)

    def run() -> None:
        while not stop.wait(interval):
            task = rng.randint(1, tasks)
            body = {"priority": rng.choice(["LOW", "MEDIUM", "HIGH", "CRITICAL"])}
            try:
                status, _, _ = http("PUT", f"{base_url}/task/{task}", token, body)
            except OSError:
                status = 0
            statuses.append(status)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join()


def measure(base_url: str, token: str, path: str, requests: int, opts: WrkOptions) -> WrkResult:
    """wrk on one path for long enough to make at least `requests` answers."""
    run_wrk(base_url + path, token, ("fixed",), opts.warmup, opts)
    seconds = opts.duration
    while True:
        result = parse_wrk(run_wrk(base_url + path, token, ("fixed",), seconds, opts))
        if result.requests >= requests or seconds >= 600:
            return result
        seconds = min(600, int(seconds * requests / max(result.requests, 1)) + 1)


@dataclass
class SizeResult:
    tasks: int
    rows: dict[str, WrkResult]
    rss_mb: dict[int, float]
    writes: list[int]
    jobs: JobsResult | None
    imported: ImportResult | None


def run_size(url: str, tasks: int, args: argparse.Namespace, tmp: Path) -> SizeResult:
    with create_engine(url).connect() as conn:
        log_day = str(conn.execute(text("SELECT max(log_date) FROM task_logger")).scalar_one())
    secret_key = secrets.token_hex(20)
    deep = deep_cursors(url, tasks, log_day, secret_key)
    # Nothing cached, and no job queued, for another size's database.
    redis.Redis.from_url(args.redis_url).flushdb()
    print(f"  deep pages: the list at depth {deep.depth:,}, the day at {deep.day_depth:,}")
    env = {
        "DATABASE_URL": url,
        "APP_ENV": "production",
        "SECRET_KEY": secret_key,
        "JWT_SECRET_KEY": secrets.token_hex(20),
        "CACHE_ENABLED": "true" if args.cache else "false",
        "RATELIMIT_ENABLED": "false",
        "ACCESS_TOKEN_TTL_SECONDS": "3600",
        "REDIS_URL": args.redis_url if args.cache else "",
        # The jobs (f) run on Celery workers over Redis, as deployed.
        "CELERY_BROKER_URL": args.redis_url,
    }
    settings = ServerSettings(args.workers, 1)
    servers: list[Server] = []
    opts = WrkOptions(args.threads, args.connections, args.duration, args.warmup)
    try:
        api = start_server(
            f"api-{tasks}",
            lambda port: granian(None, port, settings),
            env,
            settings,
            tmp,
            servers,
        )
        admin = login(api.base_url, "admin")
        user = login(api.base_url, "user00001")
        rows: dict[str, WrkResult] = {}
        wanted = [s for s in scenarios(log_day, deep) if not args.only or s.name[1] in args.only]
        with writer(api.base_url, admin, tasks, args.write_interval) as writes:
            for scenario in wanted:
                token = admin if scenario.as_admin else user
                result = measure(api.base_url, token, scenario.path, args.requests, opts)
                rows[scenario.name] = result
                print(
                    f"  {tasks:>10,}  {scenario.name:<34} {result.requests:>6} req  "
                    f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  "
                    f"non-2xx {result.non_2xx + result.socket_errors}",
                    flush=True,
                )
        group = api.proc.pid
        pids = [p.pid for p in processes().values() if p.pgrp == group]
        rss = peak_rss_mb(pids)
        jobs = None
        if not args.only or "f" in args.only or "g" in args.only:
            jobs = measure_jobs(url, api.base_url, admin, env, tmp)
        imported = None
        if not args.only or "h" in args.only:
            imported = measure_import(url, env, tmp, args.import_rows)
        return SizeResult(tasks, rows, rss, writes, jobs, imported)
    finally:
        for server in servers:
            stop_server(server)


# --- report ------------------------------------------------------------------------------------


def report(small: SizeResult, large: SizeResult) -> bool:
    ok = True
    print()
    print(
        f"{'scenario':<34} {'p50 small':>10} {'p99 small':>10} {'p50 large':>10} "
        f"{'p99 large':>10} {'growth':>7}  p99<{P99_TARGET_MS:g}  growth<={GROWTH_TARGET}  2xx"
    )
    for name, big in large.rows.items():
        little = small.rows.get(name)
        growth = big.p99_ms / little.p99_ms if little and little.p99_ms else float("nan")
        p99_ok = big.p99_ms < P99_TARGET_MS
        growth_ok = growth <= GROWTH_TARGET
        clean = big.non_2xx + big.socket_errors == 0 and (
            little is None or little.non_2xx + little.socket_errors == 0
        )
        ok = ok and p99_ok and growth_ok and clean
        print(
            f"{name:<34} {little.p50_ms if little else float('nan'):10.1f} "
            f"{little.p99_ms if little else float('nan'):10.1f} {big.p50_ms:10.1f} "
            f"{big.p99_ms:10.1f} {growth:7.2f}  {'PASS' if p99_ok else 'FAIL':<7} "
            f"{'PASS' if growth_ok else 'FAIL':<13} {'PASS' if clean else 'FAIL'}"
        )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for size in (small, large):
        worst = max(size.rss_mb.values(), default=0.0)
        rss_ok = worst < RSS_TARGET_MB
        ok = ok and rss_ok
        failed_writes = sum(1 for s in size.writes if s != 200)
        print(
            f"{size.tasks:>10,} tasks: peak RSS of the {len(size.rss_mb)} server processes "
            f"{', '.join(f'{v:.0f}' for v in sorted(size.rss_mb.values()))} MB "
            f"(< {RSS_TARGET_MB:g}: {'PASS' if rss_ok else 'FAIL'}); "
            f"{len(size.writes)} writes during the runs, {failed_writes} not 200"
        )
    for size in (small, large):
        if size.jobs is not None:
            ok = report_jobs(size.tasks, size.jobs) and ok
    for size in (small, large):
        if size.imported is not None:
            ok = report_import(size.tasks, size.imported) and ok
    print(f"this process (seeding and driving): peak RSS {own:.0f} MB")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--log-days", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="reuse (and keep) the seeded databases")
    parser.add_argument("--requests", type=int, default=1000, help="answers per scenario, at least")
    parser.add_argument("--duration", type=int, default=10, help="seconds of a first wrk run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--write-interval", type=float, default=0.1)
    parser.add_argument("--only", default="", help="letters of the scenarios, e.g. 'a,c'")
    parser.add_argument("--import-rows", type=int, default=1_000_000, help="rows of (h)'s file")
    parser.add_argument("--cache", action="store_true", help="serve with the response cache on")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench.scale needs wrk on PATH (Debian: apt-get install wrk)")

    urls: list[str] = []
    try:
        results = []
        for tasks in (args.small, args.tasks):
            url = ensure_seeded(args.server, tasks, args.users, args.log_days, args.keep)
            urls.append(url)
            with ExitStack() as stack:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
                results.append(run_size(url, tasks, args, tmp))
        ok = report(results[0], results[1])
    finally:
        if not args.keep:
            for url in urls:
                drop_database(args.server, url)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
