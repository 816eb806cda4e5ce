"""HTTP API benchmark under gunicorn, driven by wrk, against a bare-Flask ceiling.

    /tmp/venv/bin/python -m bench.api [--tasks 100000] [--users 200] [--log-days 10]
                                      [--duration 10] [--connections 16]

Needs `wrk` on PATH (Debian: apt-get install wrk), PostgreSQL (BENCH_DATABASE_URL) and Redis
(BENCH_REDIS_URL, a database number this script may FLUSHDB). In one run it:
  1. creates a throwaway database, migrates it, seeds N tasks round-robin over the users (mixed
     status and priority, created over 30 days), log-days x N task_logger rows, one admin and
     the users (one argon2 hash for all), then VACUUM ANALYZE and CHECKPOINT (the seed is on
     disk before the runs); with --postgres-on-ram (a diagnostic) on a throwaway PostgreSQL
     whose files are in RAM (bench/ram_postgres.py), which tells the disk's share of the write
     latency from the service's;
  2. serves the API with gunicorn -c gunicorn.conf.py on a free loopback port, and the ceiling
     (bench/ceiling_app.py: no database, the same JSON page, serialised on every request by the
     API's own JSON provider) with the same gunicorn settings: by default gunicorn.conf.py's
     defaults with Redis on this machine (one worker per core, one thread each); for
     reference, the ceiling once more with Flask's own (standard-library) JSON provider;
  3. logs in as a `user` and as the admin, and drives each scenario with wrk and
     bench/wrk_api.lua, --repeat times (3; each run after a few seconds of unmeasured warm-up,
     then, before a cache-miss or write run, with every cached answer deleted but the lists'
     totals and ids and the days' entries kept, as a running service has them; --cold-cache
     flushes those too):
     a single run depends on how wrk's 16 connections happen to land on the workers. Each API
     run comes right after a run of the ceiling's: this host's speed drifts by 20% and more
     within minutes, so a row is compared with the ceiling measured next to it, not minutes
     earlier;
  4. prints, for the median run of each scenario (by req/s), req/s, p50, p99, non-2xx, the
     X-Cache hit rate and the ratio to the median req/s of the ceiling's runs next to it, with
     PASS/FAIL against the targets: cache-warm reads >= 0.6 x ceiling, cache-miss reads >=
     0.3 x ceiling (and fewer than half of their answers hits: else the row measured hits),
     p99 < 50 ms, no non-2xx answer (nor socket error) in any run; and, per
     row, the range of req/s and the worst p99 over the runs, the CPU share other processes
     took meanwhile (a shared machine skews every figure), then a summary of the warnings and
     errors in the servers' logs (e.g. cache bypasses on Redis timeouts).
It always stops its gunicorn processes, drops the database and flushes its Redis database.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from flask_migrate import upgrade
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cache.store import ENTRY_KEY_PREFIX
from app.services.pages import TOTALS
from app.services.task_logs import DAY_ENTRIES
from app.services.tasks import LIST_IDS
from bench.common import DEFAULT_SERVER, throwaway_database
from bench.ram_postgres import ram_postgres

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).resolve().parent / "wrk_api.lua"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
PASSWORD = "bench-password-1234"  # noqa: S105 (a throwaway account in a throwaway database)
LOGIN_PATH = "/login"
PAGE_PATH = "/tasks?page=1&per_page=20"

WARM_RATIO, MISS_RATIO, MAX_P99_MS = 0.6, 0.3, 50.0
# The service as it is deployed (and the ceiling alike): development turns on Flask's debug mode,
# whose answers are indented and computed by the output models on the hot path (app.api.tasks.
# _output_of), which is not what a production server runs. Production refuses placeholder
# secrets: the runs get random ones (secrets.token_hex(20): 40 characters).
BENCH_APP_ENV = "production"
# A cache-miss row measures misses only if most of its answers are: random requests over a space
# too small for the machine's speed repeat, and the repeats are hits (seen: 82% hits over 3,000
# list pages in 10 s). Such a row fails, whatever its req/s: raise --max-page / --date-max-page.
MAX_MISS_ROW_HIT_RATE = 0.5
BUSY_MACHINE_PCT = 10.0  # CPU share of other processes above which the figures are flagged


# --- the cache between runs --------------------------------------------------------------

# What a list remembers for all of its pages (its total or ids, a day's entries), stored beside the
# answers, under the same key prefix (app.services.pages.remembered).
REMEMBERED_KINDS = (TOTALS, LIST_IDS, DAY_ENTRIES)


def forget_answers(cache: redis.Redis) -> int:
    """Delete every cached answer, keeping the counters and what the lists remember for all of
    their pages: a service that has been running has those, and the cache-miss rows are about
    answers nobody asked for yet, not about the first request of a list after Redis lost
    everything (that one reads the list's ids or the day's entries: 20-170 ms, then no more; see
    --cold-cache). Returns how many were deleted."""
    kept = tuple(f"{ENTRY_KEY_PREFIX}{kind}:".encode() for kind in REMEMBERED_KINDS)
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


# --- gunicorn -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    name: str, app_spec: str, env: dict[str, str], log_dir: Path, servers: list[Server]
) -> Server:
    port = free_port()
    log_path = log_dir / f"{name}.log"
    env = {**os.environ, **env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), app_spec],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so it can be stopped as a whole
        )
    server = Server(name, proc, f"http://127.0.0.1:{port}", log_path)
    servers.append(server)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            status, _, _ = http("GET", server.base_url + "/health")
            if status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer /health within 60 s:\n{tail(log_path)}")


def stop_server(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# Python logging's text format ("WARNING:name:message") and gunicorn's ("[ERROR] message");
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
    return f"{match.group(4)} gunicorn: {match.group(5)}"


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
        if any(proc.pgrp == s.proc.pid for s in self.servers):  # gunicorn and its workers
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
    kind: str  # warm, miss, write, ceiling, reference
    path: str  # the wrk URL's path (the fixed request, or the base of random ones)
    token: str
    mode: tuple[str, ...]


@dataclass
class Row:
    scenario: Scenario
    result: WrkResult  # the median run by req/s (the verdicts are about it)
    other_cpu: float  # % of the machine used by other processes meanwhile (the most of any run)
    runs: list[WrkResult] = field(default_factory=list)  # every run, the median's included
    # The ceiling's runs measured next to this row's, one right before each of them: the host's
    # speed drifts by 20% and more within minutes, so a ratio to a ceiling measured minutes
    # earlier would be as much about the drift as about the service.
    ceiling_runs: list[WrkResult] = field(default_factory=list)

    def ceiling_rps(self, overall: float) -> float:
        """The req/s of the ceiling to compare this row with: the median of its adjacent
        ceiling runs, else (none measured) `overall`."""
        return median_run(self.ceiling_runs).rps if self.ceiling_runs else overall

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


KIND_RATIO = {"warm": WARM_RATIO, "miss": MISS_RATIO}


def verdicts(row: Row, ceiling_rps: float) -> tuple[str, str, str, bool]:
    res, kind = row.result, row.scenario.kind
    ok = True
    target = KIND_RATIO.get(kind)
    if target is None:
        ratio_cell = "-"
    else:
        passed = res.rps >= target * ceiling_rps
        ok &= passed
        ratio_cell = f">={target:.1f} {'PASS' if passed else 'FAIL'}"
    if kind == "miss" and (res.hit_rate or 0.0) >= MAX_MISS_ROW_HIT_RATE:
        ok = False
        ratio_cell = "HITS FAIL"  # not a measure of misses (see MAX_MISS_ROW_HIT_RATE)
    p99_ok = res.p99_ms < MAX_P99_MS
    errors_ok = all(run.non_2xx == 0 and run.socket_errors == 0 for run in row.runs or [res])
    ok &= p99_ok and errors_ok
    return ratio_cell, "PASS" if p99_ok else "FAIL", "PASS" if errors_ok else "FAIL", ok


def print_table(rows: list[Row], ceiling_rps: float) -> None:
    header = (
        f"{'scenario':<34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} "
        f"{'hit %':>5} {'ceiling':>7} {'x ceil':>6}  {'ratio tgt':<10} {'p99<50':<6} {'2xx':<4} "
        f"{'row':<4} {'other %':>7} {'runs req/s':>11} {'worst p99':>9}"
    )
    print(header)
    print("-" * len(header))
    passed = 0
    for row in rows:
        res = row.result
        hit = res.hit_rate
        ceiling = row.ceiling_rps(ceiling_rps)
        ratio_cell, p99_cell, errors_cell, ok = verdicts(row, ceiling)
        passed += ok
        errors = f"{res.non_2xx}" + (f"+{res.socket_errors}s" if res.socket_errors else "")
        print(
            f"{row.scenario.name:<34} {res.rps:>8.0f} {res.p50_ms:>7.1f} {res.p99_ms:>7.1f} "
            f"{errors:>7} {'-' if hit is None else f'{100 * hit:.0f}':>5} {ceiling:>7.0f} "
            f"{res.rps / ceiling:>6.2f}  {ratio_cell:<10} {p99_cell:<6} {errors_cell:<4} "
            f"{'PASS' if ok else 'FAIL':<4} {row.other_cpu:>7.0f} {row.rps_range:>11} "
            f"{row.worst_p99_ms:>9.1f}"
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
    # gunicorn.conf.py's defaults for a deployment with Redis on this machine (given explicitly:
    # the ceiling has no REDIS_URL, and the same settings must serve both).
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="WEB_CONCURRENCY")
    parser.add_argument("--gunicorn-threads", type=int, default=1, help="GUNICORN_THREADS")
    # Random pages over spaces larger than the requests a run makes, so that the cache mostly
    # misses: 250 list pages (the seed's narrowest filter, inactive with one priority, has 250
    # full pages) x 60 filters and orders; 1,000 of each log day's 5,000 pages x 10 days.
    parser.add_argument("--max-page", type=int, default=250, help="random list pages: 1..N")
    parser.add_argument("--date-max-page", type=int, default=5000, help="random log pages: 1..N")
    parser.add_argument(
        "--only",
        default="",
        help="letters of the API scenarios to run, e.g. 'd,e' (default: all; the ceiling always)",
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
        help="flush all of Redis before each cache-miss run (lists' totals and ids, days' "
        "entries too), "
        "instead of deleting only the cached answers",
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
                print(f"stopped gunicorn ({', '.join(s.name for s in servers) or 'none'})")
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

    gunicorn_env = {
        "WEB_CONCURRENCY": str(args.workers),
        "GUNICORN_THREADS": str(args.gunicorn_threads),
    }
    app_env = {
        **gunicorn_env,
        "DATABASE_URL": url,
        "REDIS_URL": args.redis_url,
        "APP_ENV": BENCH_APP_ENV,
        "SECRET_KEY": secrets.token_hex(20),
        "JWT_SECRET_KEY": secrets.token_hex(20),
        "RATELIMIT_ENABLED": "false",
        "ACCESS_TOKEN_TTL_SECONDS": "3600",
        "DB_POOL_SIZE": "10",
    }
    opts = WrkOptions(args.threads, args.connections, args.duration, args.warmup)
    print(
        f"gunicorn -c gunicorn.conf.py (gthread) for both servers: "
        f"WEB_CONCURRENCY={args.workers} GUNICORN_THREADS={args.gunicorn_threads} "
        f"GUNICORN_BIND=127.0.0.1:<free port>"
    )
    print(
        f"API env: APP_ENV={BENCH_APP_ENV} RATELIMIT_ENABLED=false ACCESS_TOKEN_TTL_SECONDS=3600 "
        f"DB_POOL_SIZE=10 REDIS_URL={args.redis_url}"
    )
    print(
        f"wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s --latency "
        f"(+{opts.warmup} s unmeasured warm-up per run), {args.repeat} runs per scenario "
        f"(the median run by req/s is reported), loopback only; "
        f"{os.cpu_count()} CPU cores shared by wrk, gunicorn, PostgreSQL and Redis"
    )

    api = start_server("api", "app:create_app()", app_env, tmp, servers)
    admin_token = login(api.base_url, seeded.admin_username)
    user_token = login(api.base_url, seeded.user_username)
    status, _, page = http("GET", api.base_url + PAGE_PATH, admin_token)
    assert status == 200, (status, page[:300])
    page_file = tmp / "page.json"
    page_file.write_bytes(page)

    ceiling = start_server(
        "ceiling",
        "bench.ceiling_app:create_app()",
        {**gunicorn_env, "APP_ENV": BENCH_APP_ENV, "CEILING_PAGE_FILE": str(page_file)},
        tmp,
        servers,
    )
    status, _, ceiling_page = http("GET", ceiling.base_url + PAGE_PATH, admin_token)
    assert status == 200, status
    assert ceiling_page == page, "the ceiling must answer the API's very bytes"
    # For reference only (no target): the ceiling with Flask's own JSON provider (the standard
    # library's json), i.e. what a bare Flask app serialises with by default.
    flask_json_ceiling = start_server(
        "ceiling-flask-json",
        "bench.ceiling_app:create_app()",
        {
            **gunicorn_env,
            "APP_ENV": BENCH_APP_ENV,
            "CEILING_PAGE_FILE": str(page_file),
            "CEILING_JSON": "flask",
        },
        tmp,
        servers,
    )
    print(
        f"page bodies: API GET {PAGE_PATH} {len(page):,} bytes, "
        f"ceiling {len(ceiling_page):,} bytes (the same 20 items)"
    )

    scenarios = [
        Scenario("(a) list p1, user, cache warm", "warm", PAGE_PATH, user_token, ("fixed",)),
        Scenario("(a) list p1, admin, cache warm", "warm", PAGE_PATH, admin_token, ("fixed",)),
        Scenario(
            "(b) list random page/filter, admin",
            "miss",
            "/",
            admin_token,
            ("list", str(args.max_page)),
        ),
        Scenario(
            "(c) list ?date=&page=, admin",
            "miss",
            "/",
            admin_token,
            ("date", str(args.date_max_page), *seeded.log_days),
        ),
        Scenario(
            "(d) GET /task/<id>, admin",
            "miss",
            "/",
            admin_token,
            ("task", str(seeded.first_task_id), str(seeded.last_task_id)),
        ),
        Scenario(
            "(e) PUT /task/<id>, admin",
            "write",
            "/",
            admin_token,
            ("put", str(seeded.first_task_id), str(seeded.last_task_id)),
        ),
    ]
    if args.only:
        letters = {f"({letter.strip()})" for letter in args.only.split(",")}
        scenarios = [s for s in scenarios if s.name.split()[0] in letters]
    ceiling_scenario = Scenario(
        "(f) ceiling: bare Flask, same page", "ceiling", PAGE_PATH, admin_token, ("fixed",)
    )

    forgotten = (
        "Redis flushed"
        if args.cold_cache
        else "the cached answers deleted (lists' totals and ids and days' entries kept)"
    )
    print(f"\nrunning (each: warm-up, then {forgotten} unless the scenario is cache-warm):")
    rows: list[Row] = []
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
            f"  {scenario.name:<36} {describe(result)}; other processes >= {share[0]:.0f}% CPU",
            flush=True,
        )
        return result, share[0]

    def measure(server: Server, scenario: Scenario, next_to: Server | None = None) -> Row:
        """`args.repeat` runs of the scenario; the row is the median run. A single run of a few
        seconds depends on how wrk's connections happen to land on the workers. With `next_to`
        (the ceiling's server), each run comes right after one of the ceiling's, which the row
        keeps as its own ceiling runs."""
        runs: list[WrkResult] = []
        ceiling_runs: list[WrkResult] = []
        busiest = 0.0
        for _ in range(args.repeat):
            if next_to is not None:
                ceiling_runs.append(one_run(next_to, ceiling_scenario)[0])
            result, other = one_run(server, scenario)
            busiest = max(busiest, other)
            runs.append(result)
        return Row(scenario, median_run(runs), busiest, runs, ceiling_runs)

    # The ceilings first, alone; then each API run right after a run of the ceiling's, which
    # stays up (idle in between) while the reference ceiling stops.
    ceiling_row = measure(ceiling, ceiling_scenario)
    flask_json_row = measure(
        flask_json_ceiling,
        Scenario(
            "(f) same, Flask's JSON provider", "reference", PAGE_PATH, admin_token, ("fixed",)
        ),
    )
    stop_server(flask_json_ceiling)
    for scenario in scenarios:
        rows.append(measure(api, scenario, next_to=ceiling))
    stop_server(ceiling)
    every_ceiling_run = ceiling_row.runs + [run for row in rows for run in row.ceiling_runs]
    ceiling_row = Row(
        ceiling_scenario, median_run(every_ceiling_run), ceiling_row.other_cpu, every_ceiling_run
    )
    rows.append(ceiling_row)

    ceiling_rps = ceiling_row.result.rps
    print(
        f"\ntargets: cache-warm reads >= {WARM_RATIO} x ceiling req/s, cache-miss reads >= "
        f"{MISS_RATIO} x ceiling req/s, p99 < {MAX_P99_MS:.0f} ms at {opts.connections} "
        "connections, zero non-2xx (and zero socket errors, shown as +Ns)"
    )
    print(
        f"ceiling: {ceiling_rps:,.0f} req/s (the median of all its runs); each API row is "
        "compared with the median of the ceiling's runs made right before its own (column "
        "ceiling)\n"
    )
    print_table(rows, ceiling_rps)
    if args.postgres_on_ram:
        print(
            "DIAGNOSTIC RUN (--postgres-on-ram): PostgreSQL kept its files, WAL included, in RAM; "
            "commits waited for no disk. Not the benchmark's figures."
        )
    reference_rps = flask_json_row.result.rps
    print(
        f"for reference (no target): the ceiling with Flask's own JSON provider (stdlib json) "
        f"answered {reference_rps:,.0f} req/s; against it the API's rows would read "
        + ", ".join(
            f"{row.scenario.name.split()[0]} {row.result.rps / reference_rps:.2f}"
            for row in rows
            if row.scenario.kind in KIND_RATIO
        )
    )
    print(
        "\nEach row is the median of its runs by req/s (runs req/s: the lowest and highest run; "
        "worst p99: the highest p99 of any run). hit % is the share of X-Cache: HIT among the "
        f"API's answers (a cache-miss row with {100 * MAX_MISS_ROW_HIT_RATE:.0f}% or more hits "
        "measures hits, not misses, and fails: 'HITS FAIL'); (e) writes and (f) have no req/s "
        "target; other % is the CPU (share of the whole machine, a lower bound) used by "
        "processes outside this benchmark while the row was measured."
    )


if __name__ == "__main__":
    main()
