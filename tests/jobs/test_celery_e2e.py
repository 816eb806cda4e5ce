"""End to end: real Celery workers (and beat) as subprocesses, on real brokers and databases.

No mocks and no eager mode. Each test starts what it needs (a Redis server of its own on a free
port, a throwaway PostgreSQL database, temporary SQLite files), starts
`celery -A app.celery_worker.celery worker` the way the Procfile does, queues the daily log
through the app and polls the database, with a bound on every wait. Every process is stopped in
teardown, failed test or not, and its output is printed there (pytest shows it on failure).

1. Redis broker, PostgreSQL: the API queues a day; every active task is logged exactly once.
2. The worker's whole process group is SIGKILLed mid-load (20k tasks, 400 chunk jobs), after
   `log_day` queued every chunk job or while it is still queueing them. A new worker gets the
   jobs the dead one held unacked (acks_late + a 5 s Redis visibility timeout): the same run
   completes, no row missing or twice. A redelivered `log_day` resumes the run it started.
3. The embedded broker (SQLAlchemy on a SQLite file) with the SQLite database: no server at all.
4. Beat boots and loads its schedule.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shelve
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis
from apiflask import APIFlask
from celery import _state as celery_state
from flask_migrate import upgrade
from sqlalchemy import func, insert, select
from werkzeug.test import TestResponse

from app import create_app
from app.extensions import db
from app.jobs.daily_log import log_day
from app.models import JobState, LoaderRunState, Role, Task, TaskPriority, TaskStatus, User
from app.models.task_log import LoaderChunk, LoaderRun, TaskLogEntry
from app.models.types import utcnow
from app.repositories import users as user_repo
from app.services import jobs as job_service
from app.services.context import passwords
from tests.conftest import (
    REQUIRE_SERVICES,
    TEST_PASSWORD,
)
from tests.conftest import test_settings as settings_for

# kombu's SQLAlchemy transport (the embedded broker) uses a loader option SQLAlchemy 2.1 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CELERY_APP = "app.celery_worker.celery"
LOG_DATE = date(2024, 3, 1)
ADMIN_USERNAME = "celery_admin"
LOG_DAY = "app.jobs.daily_log.log_day"
LOG_CHUNK = "app.jobs.daily_log.log_chunk"
JOB_TIMEOUT = 60.0  # seconds for a queued day to be fully logged
PRIORITIES = list(TaskPriority)


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A subprocess leading a process group of its own, its output in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stopping: bool = False  # signalled by the test: its exit is no failure

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal_group(self, sig: signal.Signals) -> None:
        self.stopping = True
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the leader (a worker's warm shutdown stops its pool itself), then SIGKILL
        for anything of the group still there."""
        self.stopping = True
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.signal_group(signal.SIGKILL)  # pool children outliving their parent, if any
        self.popen.wait(5)


class Services:
    """Every process a test starts; all of them are stopped at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Service] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Service:
        log_path = self.directory / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                args,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, to kill it with its children
            )
        service = Service(name, popen, log_path)
        self.started.append(service)
        return service

    def outputs(self) -> str:
        return "\n".join(
            f"===== {s.name} (pid {s.popen.pid}, exit {s.popen.poll()}) =====\n{s.output()}"
            for s in self.started
        )

    def stop_all(self) -> None:
        for service in reversed(self.started):
            service.stop()


def wait_until(
    condition: Callable[[], bool],
    what: str,
    services: Services,
    timeout: float = JOB_TIMEOUT,
    interval: float = 0.1,
) -> float:
    """Poll `condition` until true; returns the seconds it took. Fails after `timeout`, or as soon
    as a started process has exited, with every process's output."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        dead = [s.name for s in services.started if not (s.alive() or s.stopping)]
        if dead:
            pytest.fail(f"{what}: {dead} exited\n{services.outputs()}")
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not after {timeout:.0f}s\n{services.outputs()}")
        time.sleep(interval)


def worker_env(database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL", "CELERY_ALWAYS_EAGER"}
    }
    env.update(
        APP_ENV="testing",
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        SECRET_KEY="e2e-secret-key-that-is-long-enough-0123456",
        JWT_SECRET_KEY="e2e-jwt-secret-key-that-is-long-enough-01234",
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST_KIB="1024",
        ARGON2_PARALLELISM="1",
        LOADER_CHUNK_SIZE="50",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_worker(services: Services, env: dict[str, str]) -> Service:
    """The Procfile's worker command; a node name of its own, as two workers of a test (or of
    parallel runs) on one host would otherwise share one."""
    args = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "--loglevel=info"]
    args += ["--concurrency=2", "--pool=prefork", f"--hostname=e2e-{time.monotonic_ns()}@%h"]
    return services.start("worker", args, env)


# --- brokers, databases and the app -----------------------------------------------------------


def skip_or_fail(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _restore_celery_current_app() -> Iterator[None]:
    """Each `create_app()` makes its Celery app the process's current one, which is where the
    shared jobs (`log_day.apply_async`) send their messages: put back the one before the test."""
    default, current = celery_state.default_app, getattr(celery_state._tls, "current_app", None)
    yield
    celery_state.set_default_app(default)
    celery_state._set_current_app(current)


@pytest.fixture
def make_app() -> Iterator[Callable[[str, str], APIFlask]]:
    """An app on `database_url` queueing to `broker_url` (not eager), its schema migrated."""
    apps: list[APIFlask] = []

    def _make(database_url: str, broker_url: str) -> APIFlask:
        app = create_app(
            settings_for(database_url, celery_broker_url=broker_url, celery_always_eager=False)
        )
        with app.app_context():
            upgrade()
        apps.append(app)
        return app

    yield _make
    for app in apps:
        app.extensions["celery"].close()  # its broker connections
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    from kombu.transport.sqlalchemy import Channel  # the embedded transport caches its engines

    for engine, _ in Channel._engines.values():
        engine.dispose()
    Channel._engines.clear()


def seed(app: APIFlask, tasks: int) -> int:
    """An admin and `tasks` tasks: some inactive, some deleted, assigned or not. Returns the
    admin's id."""
    with app.app_context():
        admin = User(
            username=ADMIN_USERNAME,
            email=f"{ADMIN_USERNAME}@example.com",
            password_hash=passwords().hash(TEST_PASSWORD),
            role=Role.ADMIN,
            is_active=True,
        )
        other = User(
            username="celery_user",
            email="celery_user@example.com",
            password_hash=passwords().hash(TEST_PASSWORD),
            role=Role.USER,
            is_active=True,
        )
        db.session.add_all([admin, other])
        db.session.flush()
        now = utcnow()
        rows = [
            {
                "task_name": f"task {i}",
                "status": TaskStatus.INACTIVE if i % 5 == 0 else TaskStatus.ACTIVE,
                "priority": PRIORITIES[i % len(PRIORITIES)],
                "assigned_user_id": (admin.id, other.id, None)[i % 3],
                "created_by_id": admin.id,
                "created_at": now,
                "updated_at": now,
                "deleted_at": now if i % 7 == 0 else None,
            }
            for i in range(tasks)
        ]
        for start in range(0, len(rows), 5000):
            db.session.execute(insert(Task), rows[start : start + 5000])
        db.session.commit()
        admin_id = admin.id
        db.session.remove()
        return admin_id


def queue_day(app: APIFlask, admin_id: int) -> str:
    """Queue the daily log of LOG_DATE as the admin, as the API does; returns the job id."""
    with app.app_context():
        admin = db.session.get(User, admin_id)
        assert admin is not None
        return job_service.start_daily_log_job(LOG_DATE, admin).id


def runs_of(app: APIFlask, job_id: str) -> list[LoaderRun]:
    with app.app_context():
        runs = list(
            db.session.scalars(
                select(LoaderRun).where(LoaderRun.job_id == job_id).order_by(LoaderRun.id)
            )
        )
        db.session.expunge_all()
        return runs


def run_finished(app: APIFlask, job_id: str) -> Callable[[], bool]:
    def finished() -> bool:
        runs = runs_of(app, job_id)
        if any(run.state == LoaderRunState.FAILED for run in runs):
            pytest.fail(f"a loader run failed: {[run.error for run in runs]}")
        return bool(runs) and all(run.state == LoaderRunState.SUCCEEDED for run in runs)

    return finished


def assert_logged_exactly_once(app: APIFlask, log_date: date) -> int:
    """Every active, undeleted task has exactly one log row for the day, with its snapshot; no
    other task has one. Returns how many rows."""
    with app.app_context():
        snapshot = (Task.status, Task.priority, Task.assigned_user_id)
        expected = {
            row[0]: tuple(row[1:])
            for row in db.session.execute(
                select(Task.id, *snapshot).where(
                    Task.status == TaskStatus.ACTIVE, Task.deleted_at.is_(None)
                )
            )
        }
        logged = db.session.execute(
            select(
                TaskLogEntry.task_id,
                TaskLogEntry.status,
                TaskLogEntry.priority,
                TaskLogEntry.assigned_user_id,
            ).where(TaskLogEntry.log_date == log_date)
        ).all()
        db.session.remove()
    task_ids = [row[0] for row in logged]
    assert len(task_ids) == len(set(task_ids)), "a task was logged twice"
    assert not expected.keys() - set(task_ids), "active tasks missing from the log"
    assert not set(task_ids) - expected.keys(), "inactive or deleted tasks were logged"
    wrong = [row[0] for row in logged if tuple(row[1:]) != expected[row[0]]]
    assert not wrong, f"snapshots differ from their tasks: {wrong[:10]}"
    assert expected, "the seed has no active task"
    return len(logged)


def assert_job_succeeded(app: APIFlask, job_id: str, rows: int) -> dict[str, Any]:
    with app.app_context():
        admin = user_repo.first_active_admin()
        assert admin is not None
        status = job_service.job_status(job_id, admin)
        runs = status["runs"]
        db.session.remove()
    assert status["state"] == JobState.SUCCEEDED
    assert status["error"] is None
    assert status["progress"]["done"] == status["progress"]["total"] > 0
    assert all(run.chunks_done == run.chunks_total for run in runs)
    assert status["result"]["rows_logged"] == rows
    assert status["result"]["rows_skipped"] == 0
    return status


@dataclass(frozen=True)
class Unacked:
    """A job delivered to a worker and not acked yet (kombu's `unacked` hash on Redis)."""

    task: str
    args: list[Any]
    id: str


def unacked_jobs(broker: redis.Redis) -> list[Unacked]:
    jobs = []
    for raw in broker.hvals("unacked"):
        message = json.loads(raw)[0]  # [message, exchange, routing key]
        args = json.loads(base64.b64decode(message["body"]))[0]
        jobs.append(Unacked(message["headers"]["task"], args, message["headers"]["id"]))
    return jobs


# --- the tests --------------------------------------------------------------------------------


def json_of(response: TestResponse) -> dict[str, Any]:
    body = response.get_json()
    assert isinstance(body, dict), response.data
    return body


def test_redis_worker_logs_every_active_task_once_on_postgres(
    postgres_url: str, services: Services, redis_url: str, make_app: Callable[..., APIFlask]
) -> None:
    app = make_app(postgres_url, redis_url)
    seed(app, 500)
    start_worker(services, worker_env(postgres_url, redis_url))
    client = app.test_client()
    login = {"username": ADMIN_USERNAME, "password": TEST_PASSWORD}
    tokens = json_of(client.post("/login", json=login))
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    def queue_through_the_api() -> tuple[str, str]:
        response = client.post(
            "/admin/jobs/daily-log", json={"date": LOG_DATE.isoformat()}, headers=headers
        )
        assert response.status_code == 202, response.data
        assert json_of(response)["state"] == "queued"
        return json_of(response)["job_id"], response.headers["Location"]

    job_id, status_url = queue_through_the_api()

    def api_says_done() -> bool:
        body = json_of(client.get(status_url, headers=headers))
        assert body["state"] != "failed", body
        return bool(body["state"] == "succeeded")

    took = wait_until(api_says_done, "the queued day logged", services)
    print(f"day of 500 tasks logged by the worker in {took:.1f}s")

    rows = assert_logged_exactly_once(app, LOG_DATE)
    status = assert_job_succeeded(app, job_id, rows)
    (run,) = status["runs"]
    assert (run.chunks_total, run.rows_eligible, run.trigger) == (10, rows, "api")
    assert json_of(client.get(status_url, headers=headers))["progress"] == {"done": 10, "total": 10}

    # The same day queued again: a run that logs nothing, and still one row per task.
    again, _ = queue_through_the_api()
    wait_until(run_finished(app, again), "the day queued again", services)
    assert assert_logged_exactly_once(app, LOG_DATE) == rows
    (rerun,) = runs_of(app, again)
    assert (rerun.rows_logged, rerun.rows_skipped) == (0, rows)


@pytest.mark.parametrize("moment", ["after_dispatch", "mid_dispatch"])
def test_sigkilled_worker_jobs_are_redelivered_to_a_new_worker(
    moment: str,
    postgres_url: str,
    services: Services,
    redis_url: str,
    make_app: Callable[..., APIFlask],
) -> None:
    """after_dispatch: `log_day` has queued all 400 chunk jobs and is acked; the chunk jobs the
    dead worker held come back. mid_dispatch: the worker dies while `log_day` is still queueing
    them; `log_day` itself comes back and completes the run it started."""
    app = make_app(postgres_url, redis_url)
    admin_id = seed(app, 20_000)
    # Unacked jobs of a dead worker come back after 5 s (an hour by default).
    env = worker_env(postgres_url, redis_url, CELERY_VISIBILITY_TIMEOUT_SECONDS="5")
    first = start_worker(services, env)
    broker = redis.Redis.from_url(redis_url)
    job_id = queue_day(app, admin_id)

    def chunks_done() -> tuple[int, int]:
        with app.app_context():
            done, total = db.session.execute(
                select(func.count(LoaderChunk.done_at), func.count())
                .select_from(LoaderChunk)
                .join(LoaderRun, LoaderRun.id == LoaderChunk.run_id)
                .where(LoaderRun.job_id == job_id)
            ).one()
            db.session.remove()
            return int(done), int(total)

    def held(task: str) -> list[Unacked]:
        return [job for job in unacked_jobs(broker) if job.task == task]

    def time_to_kill() -> bool:
        done = chunks_done()[0]
        if moment == "mid_dispatch":  # log_day is still queueing the chunk jobs
            if done >= 1 and not held(LOG_DAY):
                pytest.fail("log_day queued every chunk job before one was done: seed more tasks")
            return done >= 1
        # Both prefetch slots full (2 unacked): the worker is not fetching a job right now. A job
        # it has popped from the queue but not yet recorded as unacked would be lost by a kill
        # (kombu's Redis transport: RPOP, then MULTI ZADD/HSET unacked), and redelivered by
        # nothing; the recovery from that is a re-run of the day, below.
        return done >= 20 and not held(LOG_DAY) and len(held(LOG_CHUNK)) == 2

    wait_until(time_to_kill, f"the moment to kill ({moment})", services, interval=0.01)
    first.signal_group(signal.SIGKILL)  # the main process and its pool children, no goodbye
    first.popen.wait(5)
    done_at_kill, total = chunks_done()
    queued_at_kill = broker.llen("celery")
    unacked = unacked_jobs(broker)
    print(f"SIGKILL at {done_at_kill}/{total} chunks done, {queued_at_kill} jobs queued;")
    print("unacked:", *unacked, sep="\n  ")
    assert 0 < done_at_kill < total, "the load ended before the kill: seed more tasks"
    held_chunks = [job for job in unacked if job.task == LOG_CHUNK]
    if moment == "mid_dispatch":
        assert LOG_DAY in {job.task for job in unacked}
        # Some chunk jobs were never queued: only the redelivered log_day can queue them.
        assert done_at_kill + len(held_chunks) + queued_at_kill < total
    else:
        assert held_chunks and LOG_DAY not in {job.task for job in unacked}

    second = start_worker(services, env)
    finished = run_finished(app, job_id)

    def drained() -> bool:
        return broker.llen("celery") == broker.hlen("unacked") == 0

    drained_since: list[float] = []

    def finished_or_stuck() -> bool:
        """Finished; or nothing queued nor unacked for 3 s, the run still unfinished."""
        if finished():
            return True
        if not drained():
            drained_since.clear()
            return False
        drained_since[:] = drained_since or [time.monotonic()]
        return time.monotonic() - drained_since[0] > 3

    took = wait_until(finished_or_stuck, "the day completed by a new worker", services)
    if not finished():
        # A chunk job was lost in flight (see time_to_kill): the run never completes by itself.
        # Queueing the job's log_day again resumes the same run and queues its pending chunks.
        print(f"stuck at {chunks_done()[0]}/{total} chunks: queueing the job's log_day again")
        with app.app_context():
            log_day.apply_async(args=[LOG_DATE.isoformat(), "api", job_id])
        took += wait_until(finished, "the day completed after log_day again", services)
    print(f"completed {took:.1f}s after the second worker started")
    # Let the queue drain: jobs queued twice (log_day queues the pending chunks again) are no-ops.
    wait_until(drained, "queue drained", services)

    rows = assert_logged_exactly_once(app, LOG_DATE)
    assert_job_succeeded(app, job_id, rows)
    (run,) = runs_of(app, job_id)  # the same run completed: redelivery, not a re-run
    assert (run.chunks_done, run.chunks_total, run.rows_logged) == (total, total, rows)
    # The jobs the dead worker held were delivered again, to the new worker.
    lines = [line for line in second.output().splitlines() if any(j.id in line for j in unacked)]
    print("redelivered:", *lines, sep="\n  ")
    assert all(any(f"[{job.id}] received" in line for line in lines) for job in unacked)
    broker.close()


def test_embedded_broker_and_sqlite_need_no_server(
    services: Services, tmp_path: Path, make_app: Callable[..., APIFlask]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    app = make_app(database_url, broker_url)
    admin_id = seed(app, 300)
    start_worker(services, worker_env(database_url, broker_url))

    job_id = queue_day(app, admin_id)

    took = wait_until(
        run_finished(app, job_id), "the day logged through the embedded broker", services
    )
    print(f"day of 300 tasks logged through the embedded broker in {took:.1f}s")
    rows = assert_logged_exactly_once(app, LOG_DATE)
    status = assert_job_succeeded(app, job_id, rows)
    assert status["progress"] == {"done": 6, "total": 6}


def test_beat_starts_and_loads_its_schedule(services: Services, tmp_path: Path) -> None:
    schedule = tmp_path / "celerybeat-schedule"
    env = worker_env(f"sqlite:///{tmp_path / 'app.db'}", f"sqla+sqlite:///{tmp_path / 'b.sqlite'}")
    args = [sys.executable, "-m", "celery", "-A", CELERY_APP, "beat", "--loglevel=debug"]
    beat = services.start("beat", [*args, f"--schedule={schedule}"], env)

    def schedule_loaded() -> bool:
        output = beat.output()
        return "beat: Starting..." in output and "daily-task-log-catch-up" in output

    wait_until(schedule_loaded, "beat started with its schedule", services, timeout=15)
    beat.stop()
    assert beat.popen.returncode == 0
    output = beat.output()
    assert "Traceback" not in output and "ERROR" not in output, output
    with shelve.open(str(schedule), flag="r") as stored:  # noqa: S301 (beat wrote it)
        entries = stored["entries"]
    assert {"daily-task-log", "daily-task-log-catch-up"} <= set(entries)
    assert entries["daily-task-log"].task == "app.jobs.daily_log.log_pending_days"
