"""bench/scale.py's jobs at size: (f) the daily load of every active task, by raw SQL and by the
loader on 1 and on 2 Celery workers, and (g) pruning the month they logged.

The three loads log three days of a month no other row is in (JOB_MONTH), so that (g) drops
exactly that month's partition (`flask logs prune`) and leaves the database as it was seeded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.api import http, processes
from bench.common import make_log_partitions, peak_rss_mb

PROJECT_ROOT = Path(__file__).resolve().parent.parent
JOB_MONTH = date(2001, 1, 1)
RAW_LOAD = """
INSERT INTO task_logger (task_id, log_date, status, priority, assigned_user_id, created_at,
                         task_created_at)
SELECT id, :day, status, priority, assigned_user_id, now(), created_at
FROM task_manager WHERE status = 'active' AND deleted_at IS NULL
ORDER BY id
ON CONFLICT (task_id, log_date) DO NOTHING
"""
WORKER_START_TIMEOUT = 60.0
JOB_TIMEOUT = 3600.0


@dataclass
class JobsResult:
    rows: int = 0  # logged by the raw load
    raw_s: float = 0.0
    loader_s: dict[int, float] = field(default_factory=dict)  # workers -> seconds
    loader_rows: dict[int, int] = field(default_factory=dict)
    worker_rss_mb: list[float] = field(default_factory=list)
    prune_s: float = 0.0
    prune_output: str = ""


def _start_worker(env: dict[str, str], log_path: Path, name: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "app.celery_worker.celery",
        "worker",
        "--concurrency=1",
        "--loglevel=info",
        "-n",
        f"{name}@%h",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while b" ready." not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start: see {log_path}")
        time.sleep(0.2)
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[float]:
    """Stop the workers (their whole process groups); each group's peak RSS in MB first."""
    groups = {proc.pid for proc in procs}
    peaks = peak_rss_mb([p.pid for p in processes().values() if p.pgrp in groups])
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return list(peaks.values())


def _run_job(base_url: str, token: str, day: date) -> float:
    """Queue the daily log of `day` through the API and wait for its job; the seconds taken."""
    start = time.perf_counter()
    status, _, body = http("POST", base_url + "/admin/jobs/daily-log", token, {"date": str(day)})
    if status != 202:
        raise RuntimeError(f"daily-log job: {status} {body[:300]!r}")
    job_url = base_url + f"/admin/jobs/{json.loads(body)['job_id']}"
    while time.perf_counter() - start < JOB_TIMEOUT:
        _, _, body = http("GET", job_url, token)
        state = json.loads(body)["state"]
        if state == "succeeded":
            return time.perf_counter() - start
        if state == "failed":
            raise RuntimeError(f"daily-log job failed: {body[:500]!r}")
        time.sleep(0.25)
    raise RuntimeError("daily-log job timed out")


def measure_jobs(url: str, base_url: str, token: str, env: dict[str, str], tmp: Path) -> JobsResult:
    result = JobsResult()
    engine = create_engine(
        url, isolation_level="AUTOCOMMIT", connect_args={"options": "-c statement_timeout=0"}
    )
    with engine.connect() as conn:
        make_log_partitions(conn, JOB_MONTH, JOB_MONTH)
        conn.execute(text("CHECKPOINT"))
        start = time.perf_counter()
        result.rows = conn.execute(text(RAW_LOAD), {"day": JOB_MONTH}).rowcount
        result.raw_s = time.perf_counter() - start
    for workers in (1, 2):
        day = JOB_MONTH + timedelta(days=workers)
        procs = [
            _start_worker(env, tmp / f"worker-{workers}-{n}.log", f"bench{workers}{n}")
            for n in range(workers)
        ]
        try:
            with engine.connect() as conn:
                conn.execute(text("CHECKPOINT"))
            result.loader_s[workers] = _run_job(base_url, token, day)
        finally:
            result.worker_rss_mb += _stop(procs)
        with engine.connect() as conn:
            logged = conn.execute(
                text("SELECT count(*) FROM task_logger WHERE log_date = :day"), {"day": day}
            ).scalar_one()
        result.loader_rows[workers] = int(logged)
    # (g): every day of JOB_MONTH is older than a year before today; nothing else is.
    start = time.perf_counter()
    pruned = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "logs", "prune", "--older-than", "365d"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env, "LOG_FORMAT": "text"},
        capture_output=True,
        check=True,
    )
    result.prune_s = time.perf_counter() - start
    result.prune_output = pruned.stdout.decode().strip()
    engine.dispose()
    return result


def report_jobs(tasks: int, jobs: JobsResult) -> bool:
    """(f) and (g) of one size; whether the loader met its targets: at most 1.3 times the raw
    load's time on 1 worker, faster on 2, every active task logged, each worker under 300 MB."""
    one, two = jobs.loader_s[1], jobs.loader_s[2]
    ratio = one / jobs.raw_s
    complete = all(rows == jobs.rows for rows in jobs.loader_rows.values())
    rss_ok = max(jobs.worker_rss_mb, default=0.0) < 300
    ok = ratio <= 1.3 and two < one and complete and rss_ok
    print(
        f"{tasks:>10,} tasks: (f) daily load of {jobs.rows:,} active tasks: raw SQL "
        f"{jobs.raw_s:.1f} s; loader on 1 worker {one:.1f} s ({ratio:.2f}x, target <= 1.3), "
        f"on 2 workers {two:.1f} s ({two / jobs.raw_s:.2f}x; faster than 1: "
        f"{'PASS' if two < one else 'FAIL'}); rows {jobs.loader_rows} "
        f"({'PASS' if complete else 'FAIL'}); worker peak RSS "
        f"{', '.join(f'{v:.0f}' for v in sorted(jobs.worker_rss_mb))} MB "
        f"({'PASS' if rss_ok else 'FAIL'})"
    )
    print(f"{tasks:>10,} tasks: (g) prune of that month: {jobs.prune_s:.2f} s: {jobs.prune_output}")
    return ok
