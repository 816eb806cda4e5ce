"""HTTP API benchmark under granian, driven by wrk, against a bare-Flask ceiling.

    .venv/bin/python -m bench.api [--tasks 100000] [--users 200] [--log-days 10]
                                  [--duration 10] [--connections 16] [--repeat 3]

Needs `wrk` on PATH (Debian: apt-get install wrk), PostgreSQL (BENCH_DATABASE_URL) and Redis
(BENCH_REDIS_URL, a database number this script may FLUSHDB). In one run it:
  1. creates a throwaway database, migrates it, seeds N tasks round-robin over the users (mixed
     status and priority, created over 30 days), log-days x N task_logger rows, one admin and
     the users (one argon2 hash for all), then VACUUM ANALYZE and CHECKPOINT (the seed is on
     disk before the runs); with --postgres-on-ram (a diagnostic) on a throwaway PostgreSQL
     whose files are in RAM (bench/ram_postgres.py), which tells the disk's share of the write
     latency from the service's;
  2. serves the API as it is deployed (`python -m app.server`: granian, WSGI) on a free loopback
     port, and the ceiling (bench/ceiling_app.py: no database, the same JSON page, serialised on
     every request by the API's own JSON provider) under the very same server and settings
     (`python -m app.server --target bench.ceiling_app:create_app`, with the API's environment):
     --workers (one per core) and --blocking-threads (1) given to both as GRANIAN_WORKERS and
     GRANIAN_BLOCKING_THREADS, and whatever else app.server reads from this environment;
     and, as a reference, the ceiling under gunicorn gthread with the same workers and threads
     (the server the API ran under before), and the ceiling under granian with Flask's own
     (standard-library) JSON provider;
  3. logs in as a `user` and as the admin, and drives each scenario with wrk and
     bench/wrk_api.lua, --repeat times (3; each run after a few seconds of unmeasured warm-up,
     then, before a cache-miss or write run, with every cached answer deleted but the lists'
     totals kept, as a running service has them; --cold-cache flushes those too):
     a single run depends on how wrk's 16 connections happen to land on the workers. Each API
     run comes right after a run of the gunicorn reference's and one of the ceiling's: this
     host's speed drifts by 20% and more within minutes, so a row is compared with the ceilings
     measured next to it, not minutes earlier;
  4. prints, for the median run of each scenario (by req/s), req/s, p50, p99, non-2xx, the
     X-Cache hit rate and two ratios, each with PASS/FAIL against its target: to the granian
     ceiling (cache-warm list >= 0.45, list misses >= 0.25, date-view misses >= 0.2,
     GET /task/<id> misses >= 0.25) and to the gunicorn reference (cache-warm reads >= 0.6,
     cache-miss reads >= 0.3); p99 < 30 ms on reads and < 50 ms on PUT; no non-2xx answer (nor
     socket error) in any run; a cache-miss row fails if half or more of its answers were hits
     (it measured hits); and, per row, the range of req/s and the worst p99 over the runs, the
     CPU share other processes took meanwhile (a shared machine skews every figure), then a
     summary of the warnings and errors in the servers' logs (e.g. cache bypasses on Redis
     timeouts).
It always stops its servers (each one's whole process group: the granian or gunicorn main
process and its workers), drops the database and flushes its Redis database.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from flask_migrate import upgrade
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cache.store import ENTRY_KEY_PREFIX
from app.services.pages import TOTALS
from bench.common import DEFAULT_SERVER, make_log_partitions, throwaway_database
from bench.ram_postgres import ram_postgres

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).resolve().parent / "wrk_api.lua"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
# --rate-limits: limits counted as deployed (in Redis), none of them ever reached.
RATE_LIMITS = {
    False: {"RATELIMIT_ENABLED": "false"},
    True: {"RATELIMIT_ENABLED": "true", "RATELIMIT_DEFAULT": "100000000/minute"},
}
PASSWORD = "bench-password-1234"  # noqa: S105 (a throwaway account in a throwaway database)
LOGIN_PATH = "/login"
PAGE_PATH = "/tasks?page=1&per_page=20"
CEILING_FACTORY = "bench.ceiling_app:create_app"

# Targets: req/s of an API row against the bare-Flask ceiling under the same granian settings,
# by scenario letter (set on each Scenario), and against the ceiling under gunicorn gthread (the
# reference), by kind of row; p99 of the reads and of the writes.
CEILING_TARGETS = {"a": 0.45, "b": 0.25, "c": 0.2, "d": 0.25}
REFERENCE_TARGETS = {"warm": 0.6, "miss": 0.3}
READ_P99_MS, WRITE_P99_MS = 30.0, 50.0
# The service as it is deployed (and the ceiling alike): development turns on Flask's debug mode,
# whose answers are indented, which is not what a production server sends. Production refuses
# placeholder secrets: the runs get random ones (secrets.token_hex(20): 40 characters).
BENCH_APP_ENV = "production"
# A cache-miss row measures misses only if most of its answers are: random requests over a space
# too small for the machine's speed repeat, and the repeats are hits (seen: 82% hits over 3,000
# list pages in 10 s). Such a row fails, whatever its req/s: raise --max-page / --date-max-page.
MAX_MISS_ROW_HIT_RATE = 0.5
BUSY_MACHINE_PCT = 10.0  # CPU share of other processes above which the figures are flagged


# --- the cache between runs --------------------------------------------------------------


def forget_answers(cache: redis.Redis) -> int:
    """Delete every cached answer, keeping the counters and the lists' totals (remembered for
    all of a list's pages beside the answers, under the same key prefix: app.services.pages): a
    service that has been running has those, and the cache-miss rows are about answers nobody
    asked for yet, not about the first request of a list after Redis lost everything (that one
    also counts the list's rows; see --cold-cache). Returns how many were deleted."""
    kept = f"{ENTRY_KEY_PREFIX}{TOTALS}:".encode()
    entries = cache.scan_iter(match=f"{ENTRY_KEY_PREFIX}*", count=1000)
    doomed = [key for key in entries if not key.startswith(kept)]
    for start in range(0, len(doomed), 1000):
        cache.unlink(*doomed[start : start + 1000])
    return len(doomed)


# --- seeding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    first_task_id: int
    last_task_id: int
    admin_username: str
    user_username: str
    log_days: list[str]


def timed(label: str, action: Callable[[], object]) -> None:
    start = time.perf_counter()
    action()
    print(f"  {label:<52} {time.perf_counter() - start:7.1f} s", flush=True)


def seed(url: str, tasks: int, users: int, log_days: int) -> Seeded:
    from app import create_app
    from app.auth.passwords import PasswordService
    from app.config import load_settings
    from app.extensions import db

    settings = load_settings(
        database_url=url, app_env="testing", redis_url=None, db_startup_retries=0
    )
    app = create_app(settings)
    with app.app_context():
        timed("migrate (flask_migrate.upgrade)", upgrade)
        password_hash = PasswordService(
            settings.argon2_time_cost, settings.argon2_memory_cost_kib, settings.argon2_parallelism
        ).hash(PASSWORD)

        def users_and_tasks() -> None:
            with db.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO users (username, email, password_hash, role, is_active, "
                        "created_at, updated_at) VALUES ('admin', 'admin@bench.example.com', "
                        ":hash, 'admin', true, now(), now())"
                    ),
                    {"hash": password_hash},
                )
                conn.execute(
                    text(
                        """
                        INSERT INTO users (username, email, password_hash, role, is_active,
                                           created_at, updated_at)
                        SELECT 'user' || lpad(g::text, 4, '0'),
                               'user' || lpad(g::text, 4, '0') || '@bench.example.com',
                               :hash, 'user', true, now(), now()
                        FROM generate_series(1, :n) AS g
                        """
                    ),
                    {"hash": password_hash, "n": users},
                )
                first_user = conn.execute(
                    text("SELECT min(id) FROM users WHERE role = 'user'")
                ).scalar_one()
                # Assignee and creator round-robin (different users); 20% inactive; priorities
                # cycle independently of status; created_at spread over 30 days.
                conn.execute(
                    text(
                        """
                        INSERT INTO task_manager (task_name, description, status, priority,
                                                  assigned_user_id, created_by_id, created_at,
                                                  updated_at, due_date)
                        SELECT 'task ' || g,
                               CASE WHEN g % 2 = 0 THEN NULL ELSE 'description of task ' || g END,
                               CASE WHEN g % 5 = 0 THEN 'inactive' ELSE 'active' END,
                               (ARRAY['LOW','MEDIUM','HIGH','CRITICAL'])[1 + (g / 5) % 4],
                               :first_user + g % :users,
                               :first_user + (g + 1) % :users,
                               t.ts, t.ts,
                               CASE WHEN g % 3 = 0 THEN NULL ELSE current_date + (g % 60) - 20 END
                        FROM generate_series(1, :n) AS g,
                             LATERAL (SELECT now() - ((g::bigint * 7919) % (30 * 86400))
                                                     * interval '1 second' AS ts) AS t
                        """
                    ),
                    {"n": tasks, "users": users, "first_user": first_user},
                )

        def task_log() -> None:
            with db.engine.begin() as conn:
                today = conn.execute(text("SELECT current_date")).scalar_one()
                make_log_partitions(conn, today - timedelta(days=log_days), today)
                for back in range(log_days, 0, -1):
                    conn.execute(
                        text(
                            """
                            INSERT INTO task_logger (task_id, log_date, status, priority,
                                                     assigned_user_id, created_at,
                                                     task_created_at)
                            SELECT id, current_date - :back, status, priority, assigned_user_id,
                                   (current_date - :back) + interval '5 minutes', created_at
                            FROM task_manager ORDER BY id
                            """
                        ),
                        {"back": back},
                    )

        timed(f"seed 1 admin, {users:,} users, {tasks:,} tasks", users_and_tasks)
        timed(f"seed {log_days * tasks:,} task_logger rows ({log_days} days)", task_log)

        def vacuum() -> None:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))

        timed("VACUUM ANALYZE", vacuum)

        def checkpoint() -> None:
            # The seed writes ~500 MB of WAL, which sets off a checkpoint that then flushes the
            # seed's pages for minutes, during the scenarios (seen: 114 s); flushed now instead.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("CHECKPOINT"))

        timed("CHECKPOINT (the seed flushed before the runs)", checkpoint)
        with db.engine.connect() as conn:
            first, last, count = conn.execute(
                text("SELECT min(id), max(id), count(*) FROM task_manager WHERE deleted_at IS NULL")
            ).one()
            days = conn.execute(
                text("SELECT DISTINCT log_date FROM task_logger ORDER BY 1")
            ).scalars()
            log_dates = [d.isoformat() for d in days]
            username = conn.execute(
                text("SELECT username FROM users WHERE role = 'user' ORDER BY id LIMIT 1")
            ).scalar_one()
        db.engine.dispose()
    # Every id in [first, last] is a live task, so random ids in that range always exist.
    assert last - first + 1 == count == tasks, (first, last, count)
    return Seeded(first, last, "admin", username, log_dates)


# --- servers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """What every server of a run is given: the same for the API and its ceilings."""

    workers: int  # processes
    threads: int  # per worker: granian's blocking threads, gunicorn's gthread threads


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]  # the main process, leader of the server's process group
    base_url: str
    log_path: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def granian(
    target: str | None, port: int, settings: ServerSettings
) -> tuple[list[str], dict[str, str]]:
    """The command and environment serving `target` (a `module:factory`; the API's by default)
    as the service is deployed: app.server's granian launcher (WSGI). The host, port, workers
    and threads under granian's own names, which the launcher reads before any other (an
    inherited WEB_CONCURRENCY, PORT or HOST does not count) and before its defaults."""
    env = {
        "GRANIAN_HOST": "127.0.0.1",
        "GRANIAN_PORT": str(port),
        "GRANIAN_WORKERS": str(settings.workers),
        "GRANIAN_BLOCKING_THREADS": str(settings.threads),
    }
    return [sys.executable, "-m", "app.server", *(["--target", target] if target else [])], env


def gunicorn(target: str, port: int, settings: ServerSettings) -> tuple[list[str], dict[str, str]]:
    """The command serving `target` (`module:factory()`) under gunicorn gthread, the reference.
    `--config python:bench` is an empty configuration (bench/__init__.py sets none of
    gunicorn's settings): without one gunicorn reads any ./gunicorn.conf.py. No control socket
    (by default one at a fixed path in the home directory: nothing here manages gunicorn)."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:bench",
        "--no-control-socket",
        "--worker-class",
        "gthread",
        "--workers",
        str(settings.workers),
        "--threads",
        str(settings.threads),
        "--bind",
        f"127.0.0.1:{port}",
        target,
    ]
    return command, {}


def start_server(
    name: str,
    launch: Callable[[int], tuple[list[str], dict[str, str]]],
    env: dict[str, str],
    settings: ServerSettings,
    log_dir: Path,
    servers: list[Server],
    timeout: float = 60.0,
) -> Server:
    """Start `launch(port)` on a free port, in a process group of its own, and return once it
    answers /health with all of its workers up (`settings.workers` of them: the servers of a run
    must have the same settings; else it fails after `timeout` seconds)."""
    port = free_port()
    command, server_env = launch(port)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env, **server_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so it can be stopped as a whole
        )
    server = Server(name, proc, f"http://127.0.0.1:{port}", log_path)
    servers.append(server)
    deadline = time.monotonic() + timeout
    workers: list[int] = []
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            status, _, _ = http("GET", server.base_url + "/health")
        except OSError:
            status = 0
        workers = worker_pids(proc.pid)
        if status == 200 and len(workers) == settings.workers:
            return server
        time.sleep(0.2)
    raise RuntimeError(
        f"{name} did not answer /health with {settings.workers} worker processes within "
        f"{timeout:g} s ({len(workers)} seen):\n{tail(log_path)}"
    )


def worker_pids(group: int) -> list[int]:
    """The processes of a server's process group that have no child in it: its workers (the
    main process, and any launcher above it, have children)."""
    members = [p for p in processes().values() if p.pgrp == group]
    parents = {p.ppid for p in members}
    return [p.pid for p in members if p.pid not in parents]


def kill_group(group: int) -> int:
    """SIGKILL to every process left in the group; how many there were."""
    left = [p for p in processes().values() if p.pgrp == group]
    if left:
        with suppress(ProcessLookupError):  # gone meanwhile
            os.killpg(group, signal.SIGKILL)
    return len(left)


def stop_server(server: Server) -> None:
    """SIGTERM to the main process, which stops its workers gracefully (granian's and
    gunicorn's alike); SIGKILL to the whole group after 40 s; then SIGKILL to whatever is still
    in the group (a worker that outlived its main process)."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            print(f"{server.name} did not stop within 40 s of SIGTERM: killed")
            kill_group(proc.pid)
            proc.wait()
    left = kill_group(proc.pid)
    if left:
        print(f"{server.name}: killed {left} process(es) left behind by its main process")


# Python logging's text format ("WARNING:name:message"), and granian's and gunicorn's own
# ("[ERROR] message");
# JSON log lines ({"level": ..., "logger": ..., "message": ...}) are read as JSON.
LOG_PROBLEM = re.compile(
    r"^(WARNING|ERROR|CRITICAL):([\w.]+):(.*)$|\[(WARNING|ERROR|CRITICAL)\] (.*)$"
)
PROBLEM_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})


def log_problem(line: str) -> str | None:
    """`LEVEL logger: message` for a warning or error line of a server log, else None."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        level = str(record.get("level", "")).upper() if isinstance(record, dict) else ""
        if level not in PROBLEM_LEVELS:
            return None
        return f"{level} {record.get('logger', '?')}: {record.get('message', '')}"
    match = LOG_PROBLEM.search(line)
    if match is None:
        return None
    if match.group(1):
        return f"{match.group(1)} {match.group(2)}: {match.group(3)}"
    return f"{match.group(4)} server: {match.group(5)}"


def log_problems(server: Server, shown: int = 8) -> None:
    """Count the server's warnings and errors (grouped, digits masked) and show the commonest."""
    groups: dict[str, int] = {}
    for line in server.log_path.read_text(errors="replace").splitlines():
        problem = log_problem(line)
        if problem is not None:
            key = re.sub(r"\d+", "#", problem)[:110]
            groups[key] = groups.get(key, 0) + 1
    print(f"{server.name} server log: {sum(groups.values())} warning/error line(s)")
    for key, count in sorted(groups.items(), key=lambda kv: -kv[1])[:shown]:
        print(f"  {count:>6} x {key}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- HTTP -----------------------------------------------------------------------------------


def http(
    method: str, url: str, token: str | None = None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept": "application/json"}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (loopback only)
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def login(base_url: str, username: str) -> str:
    status, _, body = http(
        "POST", base_url + LOGIN_PATH, body={"username": username, "password": PASSWORD}
    )
    if status != 200:
        raise RuntimeError(f"login as {username}: {status} {body[:300]!r}")
    token: str = json.loads(body)["access_token"]
    return token


# --- other load on the machine -------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PG_BACKEND = re.compile(r"^postgres: [^:]+: \S+ (\S+) (\S+\(\d+\)|\[local\])")
PG_PARALLEL = re.compile(r"parallel worker for PID (\d+)")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgrp: int
    ticks: int  # user + system CPU time, in clock ticks
    cmdline: str


def processes() -> dict[int, Proc]:
    found: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        ppid, pgrp, ticks = int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])
        found[pid] = Proc(pid, ppid, pgrp, ticks, cmdline.strip())
    return found


@dataclass
class OtherLoad:
    """CPU used by processes that are not part of this benchmark, as a share of the machine:
    another job on the machine skews every figure. Processes that start and exit within the
    measurement are not seen, so this is a lower bound."""

    database: str
    servers: list[Server]

    def ours(self, proc: Proc, procs: dict[int, Proc]) -> bool:
        me = os.getpid()
        if proc.pid == me or proc.ppid == me:  # this script and wrk
            return True
        if any(proc.pgrp == s.proc.pid for s in self.servers):  # a server's processes
            return True
        if "redis-server" in proc.cmdline:  # shared, but these scenarios drive it
            return True
        if not proc.cmdline.startswith("postgres"):
            return False
        parallel = PG_PARALLEL.search(proc.cmdline)
        if parallel:
            leader = procs.get(int(parallel.group(1)))
            return leader is not None and self.database in leader.cmdline
        backend = PG_BACKEND.match(proc.cmdline)
        # A backend of another database is someone else's; background processes count as ours.
        return backend is None or backend.group(1) == self.database

    @contextmanager
    def measure(self) -> Iterator[list[float]]:
        share: list[float] = []
        before, start = processes(), time.monotonic()
        yield share
        after, elapsed = processes(), time.monotonic() - start
        ticks = sum(
            p.ticks - before[pid].ticks
            for pid, p in after.items()
            if pid in before and not self.ours(p, after)
        )
        share.append(100 * ticks / CLOCK_TICKS / elapsed / (os.cpu_count() or 1))


# --- wrk ------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    statuses: str
    xcache: dict[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float | None:
        answered = sum(self.xcache.get(k, 0) for k in ("HIT", "MISS", "BYPASS"))
        return self.xcache.get("HIT", 0) / answered if answered else None


UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(out: str) -> WrkResult:
    def percentile(p: int) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {p}% latency in wrk output:\n{out}")
        return float(match.group(1)) * UNIT_MS[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise ValueError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    statuses = re.search(r"^bench-status (.*)$", out, re.MULTILINE)
    xcache = re.search(r"^bench-xcache (.*)$", out, re.MULTILINE)
    return WrkResult(
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        p50_ms=percentile(50),
        p99_ms=percentile(99),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        statuses=statuses.group(1).strip() if statuses else "",
        xcache=dict((k, int(v)) for k, _, v in (p.partition("=") for p in xcache.group(1).split()))
        if xcache
        else {},
    )


@dataclass(frozen=True)
class WrkOptions:
    threads: int
    connections: int
    duration: int
    warmup: int


def run_wrk(url: str, token: str, mode: Sequence[str], seconds: int, opts: WrkOptions) -> str:
    cmd = [
        "wrk",
        f"-t{opts.threads}",
        f"-c{opts.connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        token,
        *mode,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


# --- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # warm, miss, write, ceiling
    path: str  # the wrk URL's path (the fixed request, or the base of random ones)
    token: str
    mode: tuple[str, ...]
    ceiling_target: float | None = None  # req/s at least this x the granian ceiling's
    max_p99_ms: float | None = None

    @property
    def reference_target(self) -> float | None:
        """req/s at least this x the gunicorn reference's (by kind: cache-warm or -miss)."""
        return REFERENCE_TARGETS.get(self.kind)


@dataclass
class Row:
    scenario: Scenario
    result: WrkResult  # the median run by req/s (the verdicts are about it)
    other_cpu: float  # % of the machine used by other processes meanwhile (the most of any run)
    runs: list[WrkResult] = field(default_factory=list)  # every run, the median's included
    # The ceiling's and the reference's runs measured next to this row's, one of each right
    # before each of its runs: the host's speed drifts by 20% and more within minutes, so a
    # ratio to a ceiling measured minutes earlier would be as much about the drift as about the
    # service.
    ceiling_runs: list[WrkResult] = field(default_factory=list)
    reference_runs: list[WrkResult] = field(default_factory=list)

    def ceiling_rps(self, overall: float) -> float:
        """The req/s of the granian ceiling to compare this row with: the median of its
        adjacent runs, else (none measured) `overall`."""
        return median_run(self.ceiling_runs).rps if self.ceiling_runs else overall

    def reference_rps(self, overall: float) -> float:
        """The same for the gunicorn reference."""
        return median_run(self.reference_runs).rps if self.reference_runs else overall

    @property
    def rps_range(self) -> str:
        rates = [run.rps for run in self.runs] or [self.result.rps]
        return f"{min(rates):.0f}-{max(rates):.0f}"

    @property
    def worst_p99_ms(self) -> float:
        return max((run.p99_ms for run in self.runs), default=self.result.p99_ms)


def median_run(runs: list[WrkResult]) -> WrkResult:
    """The run with the median req/s (the lower middle one of an even number)."""
    return sorted(runs, key=lambda run: run.rps)[(len(runs) - 1) // 2]


@dataclass(frozen=True)
class Verdict:
    """A row's cells (`>=0.45 PASS`, `<30 FAIL`, `-` without a target) and whether it passes."""

    ceiling: str
    reference: str
    p99: str
    errors: str
    ok: bool


def ratio_cell(rps: float, target: float | None, baseline_rps: float) -> tuple[str, bool]:
    if target is None:
        return "-", True
    passed = rps >= target * baseline_rps
    return f">={target:g} {'PASS' if passed else 'FAIL'}", passed


def verdicts(row: Row, ceiling_rps: float, reference_rps: float) -> Verdict:
    """The row's median run against its targets: req/s x the granian ceiling's and x the
    gunicorn reference's, p99, and no non-2xx answer nor socket error in any of its runs."""
    res, scenario = row.result, row.scenario
    ceiling, ceiling_ok = ratio_cell(res.rps, scenario.ceiling_target, ceiling_rps)
    reference, reference_ok = ratio_cell(res.rps, scenario.reference_target, reference_rps)
    hits = res.hit_rate
    if scenario.kind == "miss" and (hits is None or hits >= MAX_MISS_ROW_HIT_RATE):
        # Not a measure of misses (see MAX_MISS_ROW_HIT_RATE), whatever its req/s; or no
        # answer said (no X-Cache header was read), so nothing tells.
        failed = "NO X-CACHE" if hits is None else "HITS FAIL"
        ceiling, reference, ceiling_ok = failed, failed, False
    if scenario.max_p99_ms is None:
        p99, p99_ok = "-", True
    else:
        p99_ok = res.p99_ms < scenario.max_p99_ms
        p99 = f"<{scenario.max_p99_ms:g} {'PASS' if p99_ok else 'FAIL'}"
    errors_ok = all(run.non_2xx == 0 and run.socket_errors == 0 for run in row.runs or [res])
    ok = ceiling_ok and reference_ok and p99_ok and errors_ok
    return Verdict(ceiling, reference, p99, "PASS" if errors_ok else "FAIL", ok)


def print_table(rows: list[Row], ceiling_rps: float, reference_rps: float) -> None:
    header = (
        f"{'scenario':<36} {'req/s':>7} {'p50 ms':>6} {'p99 ms':>6} {'non-2xx':>7} "
        f"{'hit %':>5} | {'ceiling':>7} {'x ceil':>6} {'target':<10} | {'gunicorn':>8} "
        f"{'x gunic':>7} {'target':<10} | {'p99 tgt':<8} {'2xx':<4} {'row':<4} {'other %':>7} "
        f"{'runs req/s':>11} {'worst p99':>9}"
    )
    print(header)
    print("-" * len(header))
    passed = 0
    for row in rows:
        res = row.result
        hit = res.hit_rate
        ceiling = row.ceiling_rps(ceiling_rps)
        reference = row.reference_rps(reference_rps)
        verdict = verdicts(row, ceiling, reference)
        passed += verdict.ok
        errors = f"{res.non_2xx}" + (f"+{res.socket_errors}s" if res.socket_errors else "")
        print(
            f"{row.scenario.name:<36} {res.rps:>7.0f} {res.p50_ms:>6.1f} {res.p99_ms:>6.1f} "
            f"{errors:>7} {'-' if hit is None else f'{100 * hit:.0f}':>5} | {ceiling:>7.0f} "
            f"{res.rps / ceiling:>6.2f} {verdict.ceiling:<10} | {reference:>8.0f} "
            f"{res.rps / reference:>7.2f} {verdict.reference:<10} | {verdict.p99:<8} "
            f"{verdict.errors:<4} {'PASS' if verdict.ok else 'FAIL':<4} {row.other_cpu:>7.0f} "
            f"{row.rps_range:>11} {row.worst_p99_ms:>9.1f}"
        )
    print("-" * len(header))
    print(f"{passed}/{len(rows)} rows pass")
    busiest = max(row.other_cpu for row in rows)
    if busiest >= BUSY_MACHINE_PCT:
        print(
            f"WARNING: other processes used up to {busiest:.0f}% of the machine's CPU during "
            "the runs (column other %): the figures, and the ratios between rows measured at "
            "different moments, are skewed. Rerun on a quiet machine."
        )


def describe(result: WrkResult) -> str:
    xcache = " ".join(f"{k}={v}" for k, v in sorted(result.xcache.items()))
    return (
        f"{result.requests:,} requests, {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms; status {result.statuses or '?'}; X-Cache {xcache or '?'}"
    )


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--log-days", type=int, default=10)
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds per scenario")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per scenario; the median run is reported"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    # Given to every server (the API, the ceiling and the gunicorn reference alike): one
    # single-threaded worker per core.
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes per server"
    )
    parser.add_argument(
        "--blocking-threads",
        type=int,
        default=1,
        help="threads per worker (granian's blocking threads, gunicorn's gthread threads)",
    )
    # Random pages over spaces larger than the requests a run makes, so that the cache mostly
    # misses: 250 list pages (the seed's narrowest filter, inactive with one priority, has 250
    # full pages) x 60 filters and orders; 1,000 of each log day's 5,000 pages x 10 days.
    parser.add_argument("--max-page", type=int, default=250, help="random list pages: 1..N")
    parser.add_argument("--date-max-page", type=int, default=5000, help="random log pages: 1..N")
    parser.add_argument(
        "--only",
        default="",
        help="letters of the API scenarios to run, e.g. 'd,e' (default: all; the ceilings always)",
    )
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    parser.add_argument(
        "--postgres-on-ram",
        action="store_true",
        help="a diagnostic: a throwaway PostgreSQL on tmpfs instead of --server (no disk flushes)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="flush all of Redis before each cache-miss run (lists' totals too), instead of "
        "deleting only the cached answers",
    )
    parser.add_argument(
        "--rate-limits",
        action="store_true",
        help="count every request against the per-caller limit, as deployed, with a limit too "
        "high to refuse any (the cost of counting; off: limits off, as the ceiling has none)",
    )
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print(
            "bench.api needs wrk (https://github.com/wg/wrk) on PATH; on Debian/Ubuntu: "
            "apt-get install wrk",
            file=sys.stderr,
        )
        sys.exit(2)
    cache = redis.Redis.from_url(args.redis_url)
    cache.ping()
    cache.flushdb()

    servers: list[Server] = []
    try:
        with ExitStack() as stack:
            server_url = (
                stack.enter_context(ram_postgres()) if args.postgres_on_ram else args.server
            )
            url = stack.enter_context(throwaway_database(server_url, prefix="mediaamp_bench_api"))
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-api-"))
            try:
                run(args, url, cache, Path(tmp), servers)
            finally:
                for server in servers:
                    stop_server(server)
                print(f"stopped the servers ({', '.join(s.name for s in servers) or 'none'})")
                for server in servers:
                    log_problems(server)
    finally:
        cache.flushdb()
        cache.close()
        print(f"flushed Redis {args.redis_url}")


def run(
    args: argparse.Namespace, url: str, cache: redis.Redis, tmp: Path, servers: list[Server]
) -> None:
    print(f"seeding ({args.tasks:,} tasks, {args.users} users, {args.log_days} log days):")
    seeded = seed(url, args.tasks, args.users, args.log_days)

    settings = ServerSettings(args.workers, args.blocking_threads)
    app_env = {
        "DATABASE_URL": url,
        "REDIS_URL": args.redis_url,
        "APP_ENV": BENCH_APP_ENV,
        "SECRET_KEY": secrets.token_hex(20),
        "JWT_SECRET_KEY": secrets.token_hex(20),
        **RATE_LIMITS[args.rate_limits],
        "ACCESS_TOKEN_TTL_SECONDS": "3600",
        "DB_POOL_SIZE": "10",
    }
    opts = WrkOptions(args.threads, args.connections, args.duration, args.warmup)
    print(
        f"granian (python -m app.server, WSGI) for the API and the ceilings: "
        f"GRANIAN_WORKERS={settings.workers} GRANIAN_BLOCKING_THREADS={settings.threads}; the "
        f"reference: gunicorn -k gthread --workers {settings.workers} --threads "
        f"{settings.threads}; each on 127.0.0.1:<free port>, with the API's environment"
    )
    print(
        f"API env: APP_ENV={BENCH_APP_ENV} "
        + " ".join(f"{k}={v}" for k, v in RATE_LIMITS[args.rate_limits].items())
        + f" ACCESS_TOKEN_TTL_SECONDS=3600 DB_POOL_SIZE=10 REDIS_URL={args.redis_url}"
    )
    print(
        f"wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s --latency "
        f"(+{opts.warmup} s unmeasured warm-up per run), {args.repeat} runs per scenario "
        f"(the median run by req/s is reported), loopback only; "
        f"{os.cpu_count()} CPU cores shared by wrk, the servers, PostgreSQL and Redis"
    )

    def serve(name: str, target: str | None, env: dict[str, str]) -> Server:
        def launch(port: int) -> tuple[list[str], dict[str, str]]:
            return granian(target, port, settings)

        return start_server(name, launch, env, settings, tmp, servers)

    api = serve("api", None, app_env)
    admin_token = login(api.base_url, seeded.admin_username)
    user_token = login(api.base_url, seeded.user_username)
    status, _, page = http("GET", api.base_url + PAGE_PATH, admin_token)
    assert status == 200, (status, page[:300])
    page_file = tmp / "page.json"
    page_file.write_bytes(page)

    # The API's environment (app.server reads the app's settings: production's refuse
    # placeholder secrets), so that the servers differ only by what they serve.
    ceiling_env = {**app_env, "CEILING_PAGE_FILE": str(page_file)}
    ceiling = serve("ceiling", CEILING_FACTORY, ceiling_env)
    reference = start_server(
        "ceiling-gunicorn",
        lambda port: gunicorn(f"{CEILING_FACTORY}()", port, settings),
        ceiling_env,
        settings,
        tmp,
        servers,
    )
    for server in (ceiling, reference):
        status, _, ceiling_page = http("GET", server.base_url + PAGE_PATH, admin_token)
        assert status == 200, (server.name, status)
        assert ceiling_page == page, f"{server.name} must answer the API's very bytes"
    # For reference only (no target): the ceiling with Flask's own JSON provider (the standard
    # library's json), i.e. what a bare Flask app serialises with by default.
    flask_json_ceiling = serve(
        "ceiling-flask-json", CEILING_FACTORY, {**ceiling_env, "CEILING_JSON": "flask"}
    )
    print(
        f"page bodies: API GET {PAGE_PATH} {len(page):,} bytes, the ceilings' the same bytes "
        "(the same 20 items)"
    )

    def read(
        letter: str, name: str, kind: str, token: str, mode: tuple[str, ...], path: str = "/"
    ) -> Scenario:
        """A read scenario, with its letter's target against the ceiling and the reads' p99."""
        target = CEILING_TARGETS[letter]
        return Scenario(f"({letter}) {name}", kind, path, token, mode, target, READ_P99_MS)

    first, last = str(seeded.first_task_id), str(seeded.last_task_id)
    scenarios = [
        read("a", "list p1, user, cache warm", "warm", user_token, ("fixed",), PAGE_PATH),
        read("a", "list p1, admin, cache warm", "warm", admin_token, ("fixed",), PAGE_PATH),
        read(
            "b", "list random page/filter, admin", "miss", admin_token, ("list", str(args.max_page))
        ),
        read(
            "c",
            "list ?date=&page=, admin",
            "miss",
            admin_token,
            ("date", str(args.date_max_page), *seeded.log_days),
        ),
        read("d", "GET /task/<id>, admin", "miss", admin_token, ("task", first, last)),
        Scenario(
            "(e) PUT /task/<id>, admin",
            "write",
            "/",
            admin_token,
            ("put", first, last),
            max_p99_ms=WRITE_P99_MS,
        ),
    ]
    if args.only:
        letters = {f"({letter.strip()})" for letter in args.only.split(",")}
        scenarios = [s for s in scenarios if s.name.split()[0] in letters]
        if not scenarios:
            raise SystemExit(f"--only {args.only!r} names none of the scenarios (a) to (e)")
    ceiling_scenario = Scenario(
        "(f) ceiling: bare Flask, granian", "ceiling", PAGE_PATH, admin_token, ("fixed",)
    )
    reference_scenario = Scenario(
        "(g) reference: same, gunicorn gthread", "ceiling", PAGE_PATH, admin_token, ("fixed",)
    )

    forgotten = (
        "Redis flushed" if args.cold_cache else "the cached answers deleted (lists' totals kept)"
    )
    print(f"\nrunning (each: warm-up, then {forgotten} unless the scenario is cache-warm):")
    other_load = OtherLoad(make_url(url).database or "", servers)

    def one_run(server: Server, scenario: Scenario) -> tuple[WrkResult, float]:
        """One run of the scenario after its warm-up (and, unless it is a cache-warm one, with
        the cached answers deleted: `forget_answers`), and the CPU share other processes took
        meanwhile."""
        target = server.base_url + scenario.path
        if opts.warmup > 0:
            run_wrk(target, scenario.token, scenario.mode, opts.warmup, opts)
        if scenario.kind in ("miss", "write"):
            if args.cold_cache:
                cache.flushdb()
            else:
                forget_answers(cache)
        with other_load.measure() as share:
            out = run_wrk(target, scenario.token, scenario.mode, opts.duration, opts)
        result = parse_wrk(out)
        print(
            f"  {scenario.name:<38} {describe(result)}; other processes >= {share[0]:.0f}% CPU",
            flush=True,
        )
        return result, share[0]

    def measure(server: Server, scenario: Scenario, beside_ceilings: bool = False) -> Row:
        """`args.repeat` runs of the scenario; the row is the median run. A single run of a few
        seconds depends on how wrk's connections happen to land on the workers. With
        `beside_ceilings`, each run comes right after one of the gunicorn reference's and one of
        the granian ceiling's, which the row keeps as its own."""
        runs: list[WrkResult] = []
        ceiling_runs: list[WrkResult] = []
        reference_runs: list[WrkResult] = []
        busiest = 0.0
        for _ in range(args.repeat):
            if beside_ceilings:
                reference_runs.append(one_run(reference, reference_scenario)[0])
                ceiling_runs.append(one_run(ceiling, ceiling_scenario)[0])
            result, other = one_run(server, scenario)
            busiest = max(busiest, other)
            runs.append(result)
        return Row(scenario, median_run(runs), busiest, runs, ceiling_runs, reference_runs)

    # The ceilings first, alone; then each API run right after a run of each of the two
    # ceilings, which stay up (idle in between) while the Flask-JSON one stops.
    ceiling_alone = measure(ceiling, ceiling_scenario)
    reference_alone = measure(reference, reference_scenario)
    flask_json_row = measure(
        flask_json_ceiling,
        Scenario(
            "(-) ceiling, Flask's JSON provider", "ceiling", PAGE_PATH, admin_token, ("fixed",)
        ),
    )
    stop_server(flask_json_ceiling)
    rows = [measure(api, scenario, beside_ceilings=True) for scenario in scenarios]
    stop_server(ceiling)
    stop_server(reference)

    def every_run(alone: Row, of: Callable[[Row], list[WrkResult]]) -> Row:
        """A ceiling's row over all of its runs: alone, and beside each API row's."""
        runs = alone.runs + [run for row in rows for run in of(row)]
        return Row(alone.scenario, median_run(runs), alone.other_cpu, runs)

    ceiling_row = every_run(ceiling_alone, lambda row: row.ceiling_runs)
    reference_row = every_run(reference_alone, lambda row: row.reference_runs)
    ceiling_rps, reference_rps = ceiling_row.result.rps, reference_row.result.rps

    print(
        f"\ntargets: req/s x the granian ceiling's: (a) cache-warm list >= "
        f"{CEILING_TARGETS['a']:g}, (b) list misses >= {CEILING_TARGETS['b']:g}, (c) date-view "
        f"misses >= {CEILING_TARGETS['c']:g}, (d) GET /task/<id> misses >= "
        f"{CEILING_TARGETS['d']:g}; x the gunicorn reference's: cache-warm reads >= "
        f"{REFERENCE_TARGETS['warm']:g}, cache-miss reads >= {REFERENCE_TARGETS['miss']:g}; "
        f"p99 < {READ_P99_MS:g} ms on reads, < {WRITE_P99_MS:g} ms on (e) PUT, at "
        f"{opts.connections} connections; zero non-2xx (and zero socket errors, shown as +Ns)"
    )
    print(
        f"ceiling (granian): {ceiling_rps:,.0f} req/s, reference (gunicorn gthread): "
        f"{reference_rps:,.0f} req/s (each the median of all its runs); each API row is compared "
        "with the median of each one's runs made right before its own (columns ceiling and "
        "gunicorn)\n"
    )
    print_table([*rows, ceiling_row, reference_row], ceiling_rps, reference_rps)
    if args.postgres_on_ram:
        print(
            "DIAGNOSTIC RUN (--postgres-on-ram): PostgreSQL kept its files, WAL included, in RAM; "
            "commits waited for no disk. Not the benchmark's figures."
        )
    flask_json_rps = flask_json_row.result.rps
    print(
        f"for reference (no target): the granian ceiling with Flask's own JSON provider (stdlib "
        f"json) answered {flask_json_rps:,.0f} req/s; against it the API's rows would read "
        + ", ".join(
            f"{row.scenario.name.split()[0]} {row.result.rps / flask_json_rps:.2f}"
            for row in rows
            if row.scenario.ceiling_target is not None
        )
    )
    print(
        "\nEach row is the median of its runs by req/s (runs req/s: the lowest and highest run; "
        "worst p99: the highest p99 of any run). hit % is the share of X-Cache: HIT among the "
        f"API's answers (a cache-miss row with {100 * MAX_MISS_ROW_HIT_RATE:.0f}% or more hits "
        "measures hits, not misses, and fails: 'HITS FAIL'; one whose answers had no X-Cache "
        "header fails too: 'NO X-CACHE'); (e) has no req/s target, (f) and "
        "(g) no target but zero non-2xx; other % is the CPU (share of the whole machine, a lower "
        "bound) used by processes outside this benchmark while the row was measured."
    )


if __name__ == "__main__":
    main()
