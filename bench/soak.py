"""Soak: a bounded mixed workload against the server (granian) on loopback, at a fixed rate.

    .venv/bin/python -m bench.soak [--minutes 10] [--rate 40] [--tasks 20000]

Seeds a throwaway PostgreSQL database (bench.api's seeding), serves the API as it is deployed
(`python -m app.server`, REDIS_URL for cache and limits), then for the given duration sends
requests at a fixed rate from a pool of client threads: 60% list reads (random pages and
filters), 15% single-task reads, 15% updates, 5% creates, 5% logins. Prints, per minute, the
request count, errors (any non-2xx, timeout or connection failure) and p50/p99 latency; at the
end, the RSS of each server worker at the start and the end and its growth. Targets: 0 errors,
RSS growth < 10%.
It stops by itself after --minutes, and always stops the server and drops its database.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.api import (
    BENCH_APP_ENV,
    DEFAULT_REDIS,
    PASSWORD,
    Server,
    ServerSettings,
    granian,
    http,
    login,
    seed,
    start_server,
    stop_server,
)
from bench.common import DEFAULT_SERVER, throwaway_database

RSS_GROWTH_TARGET = 0.10


@dataclass
class Minute:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--threads", type=int, default=8, help="blocking threads per worker")
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    args = parser.parse_args()

    cache = redis.Redis.from_url(args.redis_url)
    cache.flushdb()
    servers: list[Server] = []
    try:
        with (
            throwaway_database(args.server) as url,
            tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp,
        ):
            try:
                soak(args, url, Path(tmp), servers)
            finally:
                for server in servers:
                    stop_server(server)
    finally:
        cache.flushdb()
        cache.close()


def soak(args: argparse.Namespace, url: str, tmp: Path, servers: list[Server]) -> None:
    print(f"seeding {args.tasks:,} tasks over {args.users} users ...")
    seeded = seed(url, args.tasks, args.users, log_days=2)
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": args.redis_url,
        "APP_ENV": BENCH_APP_ENV,
        "SECRET_KEY": secrets.token_hex(20),
        "JWT_SECRET_KEY": secrets.token_hex(20),
        "RATELIMIT_ENABLED": "false",
        "ACCESS_TOKEN_TTL_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",  # not the request lines (INFO)
    }
    settings = ServerSettings(workers=args.workers, threads=args.threads)
    api = start_server(
        "api", lambda port: granian(None, port, settings), env, settings, tmp, servers
    )
    token = login(api.base_url, seeded.admin_username)
    pids = worker_pids(api.proc.pid)
    # Warm every worker before the first RSS reading, so growth means growth, not start-up.
    for _ in range(200):
        http("GET", api.base_url + "/tasks?page=1", token)
    rss_start = {pid: rss_kib(pid) for pid in pids}

    duration = args.minutes * 60
    minutes = [Minute() for _ in range(int(args.minutes + 0.999))]
    lock = threading.Lock()
    rng = random.Random(42)
    first, last = seeded.first_task_id, seeded.last_task_id

    def one_request(started: float) -> None:
        roll = rng.random()
        if roll < 0.60:
            page = rng.randint(1, 50)
            status_filter = rng.choice(["", "&status=active", "&status=inactive"])
            call = ("GET", f"/tasks?page={page}&per_page=20{status_filter}", None)
        elif roll < 0.75:
            call = ("GET", f"/task/{rng.randint(first, last)}", None)
        elif roll < 0.90:
            body = {"description": f"soak {time.time()}"}
            call = ("PUT", f"/task/{rng.randint(first, last)}", body)
        elif roll < 0.95:
            call = ("POST", "/task", {"task_name": f"soak {rng.random()}"})
        else:
            call = ("POST", "/login", {"username": seeded.user_username, "password": PASSWORD})
        method, path, body = call
        t0 = time.perf_counter()
        try:
            status, _, _ = http(method, api.base_url + path, token, body)
        except OSError:
            status = 0
        elapsed_ms = (time.perf_counter() - t0) * 1000
        index = min(int((time.monotonic() - started) // 60), len(minutes) - 1)
        with lock:
            bucket = minutes[index]
            bucket.latencies_ms.append(elapsed_ms)
            bucket.statuses[status] = bucket.statuses.get(status, 0) + 1
            if not 200 <= status < 300:
                bucket.errors += 1

    print(
        f"soaking for {args.minutes:g} min at {args.rate:g} req/s "
        f"({args.workers} server workers x {args.threads} threads, {args.clients} client "
        "threads) ..."
    )
    started = time.monotonic()
    interval = 1.0 / args.rate
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        sent = 0
        while (now := time.monotonic()) - started < duration:
            due = started + sent * interval
            if due > now:
                time.sleep(due - now)
            pool.submit(one_request, started)
            sent += 1
    rss_end = {pid: rss_kib(pid) for pid in pids if Path(f"/proc/{pid}").exists()}

    print(f"{'minute':>6} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}")
    total_errors = 0
    for number, bucket in enumerate(minutes, start=1):
        lat = sorted(bucket.latencies_ms)
        if not lat:
            continue
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        total_errors += bucket.errors
        print(f"{number:>6} {len(lat):>9} {bucket.errors:>7} {p50:>8.1f} {p99:>8.1f}")
    print(f"errors: {total_errors} (target 0) {'PASS' if total_errors == 0 else 'FAIL'}")
    growth_ok = True
    for pid, start_kib in rss_start.items():
        end_kib = rss_end.get(pid)
        if end_kib is None:
            print(f"worker {pid}: gone before the end (restarted?)")
            growth_ok = False
            continue
        growth = (end_kib - start_kib) / start_kib
        growth_ok &= growth < RSS_GROWTH_TARGET
        print(
            f"worker {pid}: RSS {start_kib / 1024:.1f} MB -> {end_kib / 1024:.1f} MB "
            f"({growth:+.1%}; target < {RSS_GROWTH_TARGET:.0%})"
        )
    print(f"RSS growth: {'PASS' if growth_ok else 'FAIL'}")


if __name__ == "__main__":
    main()
