"""The task log's monthly partitions (PostgreSQL, migration 0012) and its retention: the loader
makes its day's month and the next one before it logs, so a month's or a year's first day never
finds its partition missing; `flask logs prune` drops whole months on PostgreSQL and deletes
rows on SQLite; beat prunes only when LOG_RETENTION_DAYS is set."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import pytest
from apiflask import APIFlask
from sqlalchemy import text

from app.extensions import db
from app.jobs.celery_app import PRUNE_LOG_JOB, beat_schedule
from app.jobs.log_retention import prune_task_log
from app.models.types import utcnow
from app.repositories import log_partitions
from app.services import loader, log_retention
from tests.conftest import Account, add_tasks
from tests.conftest import test_settings as settings_for

TASKS = 4


@pytest.fixture
def tasks(app: APIFlask, admin: Account) -> None:
    add_tasks(app, admin, TASKS)


def _logged(day: date) -> None:
    run = loader.run_inline(day, "test")
    assert run.state.value == "succeeded", run.error
    assert run.rows_logged == TASKS


def _partition_names() -> set[str]:
    return {partition.name for partition in log_partitions.partitions()}


def _partition_of_each_day() -> dict[date, set[str]]:
    rows = db.session.execute(
        text("SELECT log_date, tableoid::regclass::text FROM task_logger GROUP BY 1, 2")
    ).all()
    found: dict[date, set[str]] = {}
    for day, partition in rows:
        found.setdefault(day, set()).add(partition)
    return found


def _days_logged() -> dict[date, int]:
    rows = db.session.execute(
        text("SELECT log_date, count(*) FROM task_logger GROUP BY log_date")
    ).all()
    return {day if isinstance(day, date) else date.fromisoformat(day): n for day, n in rows}


def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("partitions are PostgreSQL's (SQLite keeps one table)")


def test_the_last_day_of_a_year_and_the_first_of_the_next_log_into_their_months(
    backend: str, tasks: None, app_context: None
) -> None:
    _postgresql_only(backend)
    _logged(date(2041, 12, 31))
    made = _partition_names()
    # The day's month and the next one, before the next one's first day is logged.
    assert {"task_logger_y2041m12", "task_logger_y2042m01"} <= made
    assert "task_logger_y2042m02" not in made

    _logged(date(2042, 1, 1))
    assert loader.run_inline(date(2042, 1, 1), "test").rows_logged == 0  # nothing twice

    assert _partition_of_each_day() == {
        date(2041, 12, 31): {"task_logger_y2041m12"},
        date(2042, 1, 1): {"task_logger_y2042m01"},
    }
    assert _days_logged() == {date(2041, 12, 31): TASKS, date(2042, 1, 1): TASKS}
    assert "task_logger_y2042m02" in _partition_names()  # made ahead again


def test_loaders_starting_at_once_make_each_month_once(app: APIFlask, backend: str) -> None:
    _postgresql_only(backend)
    barrier = threading.Barrier(4)
    made: list[list[str]] = []
    errors: list[BaseException] = []

    def start() -> None:
        with app.app_context():
            try:
                barrier.wait()
                made.append(log_retention.ensure_partitions(date(2043, 5, 17)))
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    every = [name for names in made for name in names]
    assert sorted(every) == ["task_logger_y2043m05", "task_logger_y2043m06"]


def test_pruning_drops_the_months_whose_every_day_is_older(
    backend: str, tasks: None, app_context: None
) -> None:
    _postgresql_only(backend)
    for day in (date(2044, 1, 15), date(2044, 2, 10), date(2044, 3, 5)):
        _logged(day)

    report = log_retention.prune(timedelta(days=30), today=date(2044, 3, 20))

    assert report.cutoff == date(2044, 2, 19)
    dropped = {partition.name for partition in report.partitions}
    assert "task_logger_y2044m01" in dropped
    assert not dropped & {"task_logger_y2044m02", "task_logger_y2044m03"}
    # February holds days after the cut-off: it stays whole, its older days with it.
    assert _days_logged() == {date(2044, 2, 10): TASKS, date(2044, 3, 5): TASKS}
    assert any(
        "dropped task_logger_y2044m01 (2044-01-01 to 2044-01-31" in line for line in report.lines()
    )

    again = log_retention.prune(timedelta(days=30), today=date(2044, 3, 20))
    assert again.partitions == [] and again.lines() == [
        "nothing logged before 2044-02-19: nothing removed"
    ]


def test_pruning_deletes_the_older_days_on_sqlite(
    backend: str, tasks: None, app_context: None
) -> None:
    if backend != "sqlite":
        pytest.skip("PostgreSQL drops whole months (test above)")
    for day in (date(2044, 1, 15), date(2044, 2, 10), date(2044, 3, 5)):
        _logged(day)

    report = log_retention.prune(timedelta(days=30), today=date(2044, 3, 20))

    assert report.rows_deleted == 2 * TASKS
    assert _days_logged() == {date(2044, 3, 5): TASKS}
    assert report.lines() == [f"deleted {2 * TASKS} rows logged before 2044-02-19"]


def test_the_prune_command_prints_what_it_removed(app: APIFlask, backend: str, tasks: None) -> None:
    old_day = utcnow().date() - timedelta(days=400)
    with app.app_context():
        _logged(old_day)
        _logged(utcnow().date())
    runner = app.test_cli_runner()

    result = runner.invoke(args=["logs", "prune", "--older-than", "180d"])

    assert result.exit_code == 0, result.output
    if backend == "postgresql":
        month = old_day.replace(day=1)
        assert f"dropped task_logger_y{month.year:04d}m{month.month:02d}" in result.output
    else:
        assert f"deleted {TASKS} rows logged before" in result.output
    with app.app_context():
        assert set(_days_logged()) == {utcnow().date()}

    for wrong in ("180", "six months", "-5d", "0.5d"):
        refused = runner.invoke(args=["logs", "prune", "--older-than", wrong])
        assert refused.exit_code == 2 and "not a number of days" in refused.output, wrong


def test_beat_prunes_only_when_a_retention_is_set(app: APIFlask, tasks: None) -> None:
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    assert "prune-task-log" not in beat_schedule(settings_for(url))

    schedule = beat_schedule(settings_for(url, log_retention_days=90))["prune-task-log"]
    assert schedule["task"] == PRUNE_LOG_JOB
    assert schedule["kwargs"] == {"older_than_days": 90}

    with app.app_context():
        _logged(utcnow().date() - timedelta(days=200))
        lines = prune_task_log(90)
        assert lines and "nothing removed" not in lines[0]
        assert _days_logged() == {}
