"""The daily task loader on both backends: what it logs, idempotence, concurrent runs (threads and,
on PostgreSQL, separate processes), a run killed half-way then re-run, redelivered chunks,
catch-up of missed days, cascades, and the `flask load-daily` command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from sqlalchemy import Connection, func, insert, select, text, update

from app.extensions import db
from app.models import (
    LoaderChunk,
    LoaderRun,
    LoaderRunState,
    Task,
    TaskLogEntry,
    TaskPriority,
    TaskStatus,
    User,
)
from app.models.types import utcnow
from app.services import loader
from app.services import tasks as task_service
from tests.conftest import PROJECT_ROOT, Account

CHUNK_SIZE = 7
DAY = date(2030, 3, 14)
PRIORITIES = list(TaskPriority)

# (task_id, log_date, status, priority, assigned_user_id)
Snapshot = tuple[int, date, TaskStatus, TaskPriority, int | None]


@dataclass(frozen=True)
class Seeded:
    """Seeded tasks: every id, and the ids the loader must (and must not) log."""

    all_ids: list[int]
    active: dict[int, tuple[TaskPriority, int | None]]  # id -> (priority, assignee)
    inactive: set[int]
    deleted: set[int]

    def expected(self, day: date) -> set[Snapshot]:
        return {(i, day, TaskStatus.ACTIVE, p, a) for i, (p, a) in self.active.items()}


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def small_chunks(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 7 task ids, so a few hundred tasks make dozens of chunks."""
    settings = app.config["SETTINGS"]
    monkeypatch.setitem(
        app.config, "SETTINGS", settings.model_copy(update={"loader_chunk_size": CHUNK_SIZE})
    )
    return CHUNK_SIZE


@pytest.fixture
def seeded(app: APIFlask, alice: Account, bob: Account, small_chunks: int) -> Seeded:
    return seed_tasks(app, 300, creator=alice.id, assignees=[alice.id, bob.id, None])


def seed_tasks(app: APIFlask, count: int, *, creator: int, assignees: list[int | None]) -> Seeded:
    """Bulk-insert `count` tasks: every 5th inactive, every 7th soft-deleted (some both)."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for n in range(count):
        rows.append(
            {
                "task_name": f"task {n}",
                "status": TaskStatus.INACTIVE if n % 5 == 0 else TaskStatus.ACTIVE,
                "priority": PRIORITIES[n % len(PRIORITIES)],
                "assigned_user_id": assignees[n % len(assignees)],
                "created_by_id": creator,
                "created_at": now,
                "updated_at": now,
                "deleted_at": now if n % 7 == 0 else None,
            }
        )
    with app.app_context():
        db.session.execute(insert(Task), rows)
        db.session.commit()
        tasks = db.session.scalars(select(Task).order_by(Task.id)).all()
        seeded = Seeded(
            all_ids=[t.id for t in tasks],
            active={
                t.id: (t.priority, t.assigned_user_id)
                for t in tasks
                if t.status == TaskStatus.ACTIVE and t.deleted_at is None
            },
            inactive={t.id for t in tasks if t.status == TaskStatus.INACTIVE},
            deleted={t.id for t in tasks if t.deleted_at is not None},
        )
    assert len(seeded.all_ids) == count
    assert seeded.inactive and seeded.deleted and seeded.inactive - seeded.deleted
    return seeded


def logged(app: APIFlask, day: date | None = None) -> list[Snapshot]:
    """Every task_logger row (of `day`), duplicates kept."""
    with app.app_context():
        stmt = select(TaskLogEntry).order_by(TaskLogEntry.id)
        if day is not None:
            stmt = stmt.where(TaskLogEntry.log_date == day)
        return [
            (e.task_id, e.log_date, e.status, e.priority, e.assigned_user_id)
            for e in db.session.scalars(stmt)
        ]


def run_row(app: APIFlask, run_id: int) -> LoaderRun:
    with app.app_context():
        run = db.session.get(LoaderRun, run_id)
        assert run is not None
        db.session.expunge(run)
        return run


def runs(app: APIFlask) -> list[LoaderRun]:
    with app.app_context():
        found = list(db.session.scalars(select(LoaderRun).order_by(LoaderRun.id)))
        db.session.expunge_all()
        return found


def chunks(app: APIFlask, run_id: int) -> list[LoaderChunk]:
    with app.app_context():
        found = list(
            db.session.scalars(
                select(LoaderChunk)
                .where(LoaderChunk.run_id == run_id)
                .order_by(LoaderChunk.chunk_no)
            )
        )
        db.session.expunge_all()
        return found


def run_inline(app: APIFlask, day: date, trigger: str = "test") -> LoaderRun:
    with app.app_context():
        run = loader.run_inline(day, trigger)
        db.session.expunge(run)
        return run


def add_run(app: APIFlask, day: date, state: LoaderRunState = LoaderRunState.SUCCEEDED) -> None:
    """A bookkeeping row as an earlier run would have left it (no task_logger rows needed)."""
    with app.app_context():
        db.session.add(
            LoaderRun(
                log_date=day,
                trigger="beat",
                chunk_size=CHUNK_SIZE,
                chunks_total=0,
                chunks_done=0,
                rows_eligible=0,
                rows_logged=0,
                rows_skipped=0,
                state=state,
                started_at=utcnow(),
                finished_at=None if state == LoaderRunState.RUNNING else utcnow(),
            )
        )
        db.session.commit()


def dates_to_log(app: APIFlask, today: date, requested: date | None = None) -> list[date]:
    with app.app_context():
        return loader.dates_to_log(today, requested)


def assert_complete_day(app: APIFlask, seeded: Seeded, day: date) -> None:
    rows = logged(app, day)
    assert len(rows) == len(set(rows)), "a (task, day) pair was logged twice"
    assert set(rows) == seeded.expected(day)


def assert_succeeded(run: LoaderRun, seeded: Seeded) -> None:
    assert run.state == LoaderRunState.SUCCEEDED, run.error
    assert run.error is None
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert run.chunks_done == run.chunks_total
    assert run.rows_eligible == len(seeded.active)
    assert run.rows_logged + run.rows_skipped == run.rows_eligible


# --- what a run logs -------------------------------------------------------------------------


def test_run_logs_exactly_the_active_undeleted_tasks_with_their_snapshot(
    app: APIFlask, seeded: Seeded
) -> None:
    before = datetime.now(UTC)
    run = run_inline(app, DAY, "cli")
    after = datetime.now(UTC)

    assert_complete_day(app, seeded, DAY)
    assert not {r[0] for r in logged(app)} & (seeded.inactive | seeded.deleted)
    assert_succeeded(run, seeded)
    assert (run.log_date, run.trigger, run.chunk_size) == (DAY, "cli", CHUNK_SIZE)
    assert (run.rows_logged, run.rows_skipped) == (len(seeded.active), 0)
    active_ids = sorted(seeded.active)
    span = active_ids[-1] - active_ids[0] + 1
    assert run.chunks_total == -(-span // CHUNK_SIZE) > 10

    plan = chunks(app, run.id)
    assert [c.chunk_no for c in plan] == list(range(run.chunks_total))
    assert plan[0].first_task_id == active_ids[0]
    assert plan[-1].last_task_id == active_ids[-1]
    for previous, chunk in pairwise(plan):
        assert chunk.first_task_id == previous.last_task_id + 1  # no gap, no overlap
    assert all(c.done_at is not None for c in plan)
    assert sum(c.rows_logged or 0 for c in plan) == run.rows_logged
    for chunk in plan:
        in_range = [i for i in active_ids if chunk.first_task_id <= i <= chunk.last_task_id]
        assert chunk.rows_logged == len(in_range)

    with app.app_context():
        entries = db.session.scalars(select(TaskLogEntry)).all()
        stamps = {e.created_at for e in entries}
        assert all(before <= s <= after and s.utcoffset() == timedelta(0) for s in stamps)
        assert all(e.log_id == e.id and e.logged_at == e.created_at for e in entries)


def test_each_entry_carries_its_tasks_created_at(app: APIFlask, seeded: Seeded) -> None:
    """The date view sorts and filters on this copy instead of joining the day to its tasks."""
    base = datetime(2030, 1, 1, tzinfo=UTC)
    with app.app_context():
        for n, task in enumerate(db.session.scalars(select(Task).order_by(Task.id))):
            task.created_at = base + timedelta(minutes=n % 11, microseconds=n)
        db.session.commit()
    run_inline(app, DAY)

    with app.app_context():
        pairs = db.session.execute(
            select(TaskLogEntry.task_created_at, Task.created_at).join(TaskLogEntry.task)
        ).all()
    assert len(pairs) == len(seeded.active)
    assert all(copied == created for copied, created in pairs)
    assert len({created for _, created in pairs}) > 11


def test_the_snapshot_keeps_the_values_of_its_day(
    app: APIFlask, seeded: Seeded, alice: Account
) -> None:
    task_id = next(i for i, (_, assignee) in seeded.active.items() if assignee is not None)
    run_inline(app, DAY)
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task is not None
        task.priority = TaskPriority.CRITICAL
        task.assigned_user_id = None
        db.session.commit()
    next_day = DAY + timedelta(days=1)
    run_inline(app, next_day)

    priority, assignee = seeded.active[task_id]
    snapshots = {r[1]: r for r in logged(app) if r[0] == task_id}
    assert snapshots[DAY] == (task_id, DAY, TaskStatus.ACTIVE, priority, assignee)
    assert snapshots[next_day] == (
        task_id,
        next_day,
        TaskStatus.ACTIVE,
        TaskPriority.CRITICAL,
        None,
    )
    assert len(logged(app, next_day)) == len(seeded.active)


def test_tasks_that_become_inactive_or_deleted_are_not_logged_from_then_on(
    app: APIFlask, seeded: Seeded
) -> None:
    deactivated, soft_deleted = sorted(seeded.active)[:2]
    reactivated = min(seeded.inactive - seeded.deleted)
    run_inline(app, DAY)
    with app.app_context():
        tasks = {t.id: t for t in db.session.scalars(select(Task))}
        tasks[deactivated].status = TaskStatus.INACTIVE
        tasks[soft_deleted].deleted_at = utcnow()
        tasks[reactivated].status = TaskStatus.ACTIVE
        db.session.commit()
    next_day = DAY + timedelta(days=1)
    run = run_inline(app, next_day)

    day_two = {r[0] for r in logged(app, next_day)}
    assert deactivated not in day_two and soft_deleted not in day_two
    assert reactivated in day_two
    assert day_two == set(seeded.active) - {deactivated, soft_deleted} | {reactivated}
    assert run.rows_logged == run.rows_eligible == len(day_two)
    # The first day's entries of those tasks are history: they stay.
    assert {deactivated, soft_deleted} <= {r[0] for r in logged(app, DAY)}


def test_a_run_with_no_active_task_succeeds_at_once(app: APIFlask, alice: Account) -> None:
    seed_tasks(app, 10, creator=alice.id, assignees=[None])
    with app.app_context():
        db.session.execute(update(Task).values(status=TaskStatus.INACTIVE))
        db.session.commit()
        run = loader.start_run(DAY, "test")
        assert run.state == LoaderRunState.SUCCEEDED
        assert (run.chunks_total, run.rows_eligible, run.rows_logged) == (0, 0, 0)
    assert logged(app) == []


def test_plan_chunks_covers_the_id_range_in_fixed_steps() -> None:
    assert loader.plan_chunks(None, None, 10) == []
    plan = loader.plan_chunks(5, 27, 10)
    assert [(c.chunk_no, c.first_task_id, c.last_task_id) for c in plan] == [
        (0, 5, 14),
        (1, 15, 24),
        (2, 25, 27),
    ]
    [single] = loader.plan_chunks(3, 3, 10)
    assert (single.first_task_id, single.last_task_id) == (3, 3)


# --- idempotence -----------------------------------------------------------------------------


def test_running_a_day_twice_logs_nothing_twice(app: APIFlask, seeded: Seeded) -> None:
    first = run_inline(app, DAY)
    rows_after_first = logged(app)
    second = run_inline(app, DAY)

    assert logged(app) == rows_after_first
    assert_complete_day(app, seeded, DAY)
    assert_succeeded(first, seeded)
    assert_succeeded(second, seeded)
    assert second.id != first.id
    assert (second.rows_logged, second.rows_skipped) == (0, len(seeded.active))
    assert run_row(app, first.id).state == LoaderRunState.SUCCEEDED  # a finished run stays so


def test_a_redelivered_chunk_counts_nothing_twice(app: APIFlask, seeded: Seeded) -> None:
    with app.app_context():
        run = loader.start_run(DAY, "test")
        run_id, total = run.id, run.chunks_total
        first = loader.run_chunk(run_id, 3)
        again = loader.run_chunk(run_id, 3)
    assert first is not None and first > 0
    assert again is None
    partial = run_row(app, run_id)
    assert (partial.chunks_done, partial.rows_logged) == (1, first)
    assert partial.state == LoaderRunState.RUNNING
    assert len(logged(app)) == first

    with app.app_context():
        for chunk_no in range(total):
            loader.run_chunk(run_id, chunk_no)
        assert loader.run_chunk(run_id, 0) is None  # after the run finished, too
        assert loader.pending_chunks(run_id) == []
    done = run_row(app, run_id)
    assert_succeeded(done, seeded)
    assert (done.chunks_done, done.rows_logged, done.rows_skipped) == (total, len(seeded.active), 0)
    assert_complete_day(app, seeded, DAY)


def test_a_chunk_of_a_failed_run_does_nothing(app: APIFlask, seeded: Seeded) -> None:
    with app.app_context():
        run_id = loader.start_run(DAY, "test").id
        loader.fail_run(run_id, "broker lost")
        assert loader.run_chunk(run_id, 0) is None
    failed = run_row(app, run_id)
    assert (failed.state, failed.error, failed.chunks_done) == (
        LoaderRunState.FAILED,
        "broker lost",
        0,
    )
    assert logged(app) == []


# --- a run killed half-way -------------------------------------------------------------------


def test_a_run_killed_half_way_is_completed_by_the_next_run(app: APIFlask, seeded: Seeded) -> None:
    with app.app_context():
        killed = loader.start_run(DAY, "beat")
        killed_id, total = killed.id, killed.chunks_total
        done_early = [loader.run_chunk(killed_id, n) for n in (0, 2, 5)]
        db.session.remove()  # the process dies: nothing else of this run happens
    partial = sum(n or 0 for n in done_early)
    assert len(logged(app, DAY)) == partial > 0
    assert run_row(app, killed_id).state == LoaderRunState.RUNNING

    rerun = run_inline(app, DAY, "cli")

    assert_complete_day(app, seeded, DAY)
    assert_succeeded(rerun, seeded)
    assert rerun.chunks_total == total
    assert (rerun.rows_logged, rerun.rows_skipped) == (len(seeded.active) - partial, partial)
    old = run_row(app, killed_id)
    assert old.state == LoaderRunState.FAILED
    assert old.error == f"superseded by run {rerun.id}"
    assert old.finished_at is not None
    assert (old.chunks_done, old.rows_logged) == (3, partial)


def test_a_superseded_run_that_was_only_slow_still_finishes(app: APIFlask, seeded: Seeded) -> None:
    """A later run of the day finishing first presumes the earlier one dead; if it is in fact
    alive (a slow worker, a concurrent run), its remaining chunks run and it succeeds."""
    with app.app_context():
        slow = loader.start_run(DAY, "beat")
        slow_id, total = slow.id, slow.chunks_total
        early = loader.run_chunk(slow_id, 0) or 0
    fast = run_inline(app, DAY, "api")
    assert run_row(app, slow_id).error == f"superseded by run {fast.id}"

    with app.app_context():
        late = [loader.run_chunk(slow_id, n) for n in range(1, total)]
    assert late == [0] * (total - 1)  # every pair was logged by the fast run meanwhile
    finished = run_row(app, slow_id)
    assert_succeeded(finished, seeded)
    assert (finished.rows_logged, finished.rows_skipped) == (early, len(seeded.active) - early)
    assert_succeeded(run_row(app, fast.id), seeded)
    assert_complete_day(app, seeded, DAY)


def test_a_finished_run_does_not_supersede_other_days(app: APIFlask, seeded: Seeded) -> None:
    with app.app_context():
        other_day = loader.start_run(DAY - timedelta(days=1), "beat")
        other_id = other_day.id
    run_inline(app, DAY)
    assert run_row(app, other_id).state == LoaderRunState.RUNNING


# --- concurrent runs -------------------------------------------------------------------------


def _run_in_threads(app: APIFlask, day: date, count: int) -> list[LoaderRun]:
    barrier = threading.Barrier(count)
    finished: list[LoaderRun] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=10)
                run = loader.run_inline(day, "thread")
                db.session.expunge(run)
                finished.append(run)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    return finished


def test_two_runs_of_the_same_day_at_the_same_time_log_each_task_once(
    app: APIFlask, seeded: Seeded
) -> None:
    finished = _run_in_threads(app, DAY, 2)

    assert_complete_day(app, seeded, DAY)
    stored = runs(app)
    assert len(stored) == 2
    for run in stored:
        assert_succeeded(run, seeded)
    assert sum(r.rows_logged for r in stored) == len(seeded.active)
    assert {r.id for r in finished} == {r.id for r in stored}


def _flask_load_daily(database_url: str, *args: str, chunk_size: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "DATABASE_URL": database_url,
        "LOADER_CHUNK_SIZE": str(chunk_size),
        "DB_STARTUP_RETRIES": "0",
        "FLASK_APP": "app",
    }
    flask = Path(sys.executable).with_name("flask")
    return subprocess.Popen(
        [str(flask), "load-daily", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_until_blocked_on_loader_runs(
    gate: Connection, processes: list[subprocess.Popen[str]], count: int
) -> None:
    waiting = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = 'loader_runs' AND NOT l.granted"
    )
    deadline = time.monotonic() + 30
    while gate.execute(waiting).scalar_one() < count:
        for process in processes:
            if process.poll() is not None:
                output = process.communicate()[0]
                pytest.fail(f"flask load-daily ended before the gate opened:\n{output}")
        assert time.monotonic() < deadline, "the loads never reached the gate"
        time.sleep(0.05)


def test_two_processes_loading_the_same_day_log_each_task_once(
    app: APIFlask, backend: str, seeded: Seeded
) -> None:
    if backend != "postgresql":
        pytest.skip("separate processes against one server: the PostgreSQL lane")
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    processes: list[subprocess.Popen[str]] = []
    try:
        with app.app_context(), db.engine.connect() as gate:
            # Both processes block on their first write (the run record) until the gate opens,
            # so their loads overlap instead of one finishing before the other has started.
            gate.execute(text("LOCK TABLE loader_runs IN EXCLUSIVE MODE"))
            # One task per chunk: hundreds of transactions each, so the two loads interleave.
            processes = [
                _flask_load_daily(url, "--date", DAY.isoformat(), chunk_size=1) for _ in range(2)
            ]
            _wait_until_blocked_on_loader_runs(gate, processes, 2)
            gate.commit()
        outputs = [p.communicate(timeout=60)[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert f"{DAY}: run " in output and " succeeded: " in output
    assert_complete_day(app, seeded, DAY)
    stored = runs(app)
    assert len(stored) == 2
    for run in stored:
        assert_succeeded(run, seeded)
        assert run.trigger == "cli"
    assert sum(r.rows_logged for r in stored) == len(seeded.active)


# --- catch-up --------------------------------------------------------------------------------


TODAY = date(2031, 6, 15)


def test_a_fresh_install_logs_only_today(app: APIFlask) -> None:
    assert dates_to_log(app, TODAY) == [TODAY]


def test_catch_up_adds_the_days_missed_since_the_last_successful_run(app: APIFlask) -> None:
    add_run(app, TODAY - timedelta(days=3))
    add_run(app, TODAY - timedelta(days=2), LoaderRunState.FAILED)
    add_run(app, TODAY - timedelta(days=1), LoaderRunState.RUNNING)
    assert dates_to_log(app, TODAY) == [TODAY - timedelta(days=d) for d in (2, 1, 0)]


def test_catch_up_is_bounded_by_loader_max_catchup_days(
    app: APIFlask, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_run(app, TODAY - timedelta(days=40))
    week = [TODAY - timedelta(days=d) for d in range(6, -1, -1)]
    assert dates_to_log(app, TODAY) == week
    assert app.config["SETTINGS"].loader_max_catchup_days == 7

    settings = app.config["SETTINGS"]
    monkeypatch.setitem(
        app.config, "SETTINGS", settings.model_copy(update={"loader_max_catchup_days": 2})
    )
    assert dates_to_log(app, TODAY) == week[-2:]


def test_nothing_to_do_when_every_day_up_to_today_is_logged(app: APIFlask) -> None:
    for days_ago in range(5, -1, -1):
        add_run(app, TODAY - timedelta(days=days_ago))
    assert dates_to_log(app, TODAY) == []
    # An explicitly requested day is always run (idempotently).
    assert dates_to_log(app, TODAY, TODAY) == [TODAY]
    assert dates_to_log(app, TODAY, TODAY - timedelta(days=100)) == [TODAY - timedelta(days=100)]


def test_a_gap_before_a_day_logged_by_hand_is_filled(app: APIFlask) -> None:
    add_run(app, TODAY - timedelta(days=5))
    add_run(app, TODAY)  # e.g. `flask load-daily --date <today>` after beat was down
    assert dates_to_log(app, TODAY) == [TODAY - timedelta(days=d) for d in (4, 3, 2, 1)]


def test_a_day_logged_ahead_of_time_does_not_stop_the_daily_log(app: APIFlask) -> None:
    """`load-daily --date` or the API accept a future day; the schedule must carry on."""
    add_run(app, TODAY - timedelta(days=2))
    add_run(app, TODAY + timedelta(days=30))
    assert dates_to_log(app, TODAY) == [TODAY - timedelta(days=1), TODAY]


def test_catch_up_runs_log_every_missed_day(app: APIFlask, seeded: Seeded) -> None:
    add_run(app, TODAY - timedelta(days=3))
    for day in dates_to_log(app, TODAY):
        run_inline(app, day, "catch-up")
    for day in (TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY):
        assert_complete_day(app, seeded, day)
    assert logged(app, TODAY - timedelta(days=3)) == []
    assert dates_to_log(app, TODAY) == []


# --- cascades --------------------------------------------------------------------------------


def test_purging_a_task_deletes_its_log_rows(app: APIFlask, seeded: Seeded, admin: Account) -> None:
    purged, kept = sorted(seeded.active)[:2]
    run_inline(app, DAY)
    run_inline(app, DAY + timedelta(days=1))
    assert sum(1 for r in logged(app) if r[0] == purged) == 2

    with app.app_context():
        actor = db.session.get(User, admin.id)
        assert actor is not None
        task_service.purge_task(actor, purged)

    remaining = logged(app)
    assert purged not in {r[0] for r in remaining}
    assert sum(1 for r in remaining if r[0] == kept) == 2
    assert len(remaining) == 2 * (len(seeded.active) - 1)


# --- flask load-daily ------------------------------------------------------------------------


@pytest.fixture
def cli_app(app: APIFlask, small_chunks: int) -> Iterator[APIFlask]:
    yield app


def test_load_daily_for_a_given_date_then_again(cli_app: APIFlask, seeded: Seeded) -> None:
    runner = cli_app.test_cli_runner()
    eligible = len(seeded.active)
    chunk_count = runs_chunk_count(seeded)

    first = runner.invoke(args=["load-daily", "--date", DAY.isoformat()])
    assert first.exit_code == 0, first.output
    assert (
        f"{DAY}: run 1 succeeded: {eligible} logged, 0 already logged, "
        f"{eligible} active tasks, {chunk_count} chunks"
    ) in first.output
    assert_complete_day(cli_app, seeded, DAY)

    second = runner.invoke(args=["load-daily", "--date", DAY.isoformat()])
    assert second.exit_code == 0, second.output
    assert f"{DAY}: run 2 succeeded: 0 logged, {eligible} already logged" in second.output
    assert_complete_day(cli_app, seeded, DAY)
    assert [r.trigger for r in runs(cli_app)] == ["cli", "cli"]


def runs_chunk_count(seeded: Seeded) -> int:
    ids = sorted(seeded.active)
    return -(-(ids[-1] - ids[0] + 1) // CHUNK_SIZE)


def test_load_daily_without_a_date_logs_today_then_has_nothing_to_do(
    cli_app: APIFlask, seeded: Seeded
) -> None:
    runner = cli_app.test_cli_runner()
    today = datetime.now(UTC).date()

    first = runner.invoke(args=["load-daily"])
    assert first.exit_code == 0, first.output
    assert f"{today}: run 1 succeeded: {len(seeded.active)} logged" in first.output
    assert_complete_day(cli_app, seeded, today)

    second = runner.invoke(args=["load-daily"])
    assert second.exit_code == 0, second.output
    assert "nothing to do: today is already logged" in second.output
    assert len(runs(cli_app)) == 1


def test_load_daily_catches_up_missed_days(cli_app: APIFlask, seeded: Seeded) -> None:
    today = datetime.now(UTC).date()
    add_run(cli_app, today - timedelta(days=2))

    result = cli_app.test_cli_runner().invoke(args=["load-daily"])

    assert result.exit_code == 0, result.output
    for day in (today - timedelta(days=1), today):
        assert f"{day}: run " in result.output
        assert_complete_day(cli_app, seeded, day)
    assert result.output.count(f"succeeded: {len(seeded.active)} logged") == 2


@pytest.mark.parametrize("value", ["2030-13-01", "yesterday", "14/03/2030"])
def test_load_daily_refuses_a_malformed_date(app: APIFlask, value: str) -> None:
    result = app.test_cli_runner().invoke(args=["load-daily", "--date", value])
    assert result.exit_code == 2
    assert "--date" in result.output
    assert runs(app) == []


def test_log_rows_count_matches_the_table(app: APIFlask, seeded: Seeded) -> None:
    """rows_logged is what was inserted: the bookkeeping agrees with the table itself."""
    run_inline(app, DAY)
    run_inline(app, DAY)
    with app.app_context():
        table_rows = db.session.scalar(select(func.count()).select_from(TaskLogEntry))
        counted = db.session.scalar(select(func.sum(LoaderRun.rows_logged)))
    assert table_rows == counted == len(seeded.active)


# --- the scheduled job: stalled and live runs ------------------------------------------------


def _start_half_done_run(app: APIFlask, day: date, started_minutes_ago: int) -> int:
    """A run whose first chunk is done and the rest pending, started some minutes ago."""
    with app.app_context():
        run = loader.start_run(day, "beat")
        loader.run_chunk(run.id, 0)
        past = utcnow() - timedelta(minutes=started_minutes_ago)
        db.session.execute(update(LoaderRun).where(LoaderRun.id == run.id).values(started_at=past))
        db.session.execute(
            update(LoaderChunk)
            .where(LoaderChunk.run_id == run.id, LoaderChunk.done_at.is_not(None))
            .values(done_at=past)
        )
        db.session.commit()
        return run.id


def test_the_scheduled_job_resumes_a_stalled_run_of_today(app: APIFlask, seeded: Seeded) -> None:
    from app.jobs.daily_log import log_pending_days

    today = utcnow().date()
    run_id = _start_half_done_run(app, today, started_minutes_ago=60)
    with app.app_context():
        assert log_pending_days.apply(kwargs={"trigger": "catch-up"}).get() == [run_id]
    assert [r.id for r in runs(app)] == [run_id]  # resumed, not a second run
    assert_succeeded(run_row(app, run_id), seeded)
    assert_complete_day(app, seeded, today)


def test_the_scheduled_job_leaves_a_run_in_progress_alone(app: APIFlask, seeded: Seeded) -> None:
    from app.jobs.daily_log import log_pending_days

    today = utcnow().date()
    run_id = _start_half_done_run(app, today, started_minutes_ago=1)
    with app.app_context():
        assert log_pending_days.apply(kwargs={"trigger": "catch-up"}).get() == []
        assert loader.pending_chunks(run_id)  # untouched: its own workers are on it
    assert [r.id for r in runs(app)] == [run_id]
