"""CSV import limits: the per-file caps and the assignee rule, on SQLite and PostgreSQL.

- CSV_MAX_ROWS_PER_FILE: a file with more data rows is refused whole (422; a job fails with the
  reason) before anything is written: no task, no account. Through the API (at once and as a
  job) and the CLI.
- CSV_MAX_NEW_ACCOUNTS_PER_FILE: unknown assignees get accounts up to the cap, in file order;
  rows naming further unknown assignees fail with a row error. Across batches, in a dry run too.
- The assignee rule: a name matches an account only if the account existed at the upload (the
  request's time, or the job's creation). Someone who registers `john_doe` after a file naming
  john_doe was uploaded, before its job runs, gets none of its tasks. A job run again after a
  crash still finds the placeholders its first run made.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from app.extensions import db
from app.models import Task, TaskAuditEntry, User
from app.models.enums import JobState
from app.models.job import Job
from app.models.types import utcnow
from tests.api.test_csv_import import (
    count,
    csv_of,
    imported,
    json_of,
    login_to,
    tasks_in_db,
    upload,
    users_by_name,
)
from tests.conftest import Account
from tests.jobs.test_csv_upload_cleanup import (
    app_like,
    deferring_app,
    job_status,
    open_files_under,
    queue_upload,
    run_job,
    the_one_queued_job,
)

CREATED_AFTER_UPLOAD = "assignee account was created after the upload"


def over_account_cap(cap: int) -> str:
    return (
        f"this file may create at most {cap} accounts for unknown assignees; "
        "create this one first or import its rows in another file"
    )


def without_errors(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "errors"}


# --- CSV_MAX_ROWS_PER_FILE ---------------------------------------------------------------------


def test_a_file_over_the_rows_cap_is_refused_whole_with_nothing_written(
    app: APIFlask, moderator: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """101 rows for a cap of 100, in batches of 10: refused before the first batch would have
    been committed, placeholder accounts included, and no temporary file left (the file, over
    500 KiB, is spooled to disk)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    padding = "x" * 6000
    rows = [f"Row {i},{padding},TRUE,LOW,,new_user_{i}" for i in range(101)]
    with app_like(app, csv_max_rows_per_file=100, csv_batch_rows=10) as capped:
        client = capped.test_client()
        headers = login_to(client, moderator)
        for dry_run in (False, True):
            response = upload(client, headers, csv_of(*rows), dry_run=dry_run)
            assert response.status_code == 422, response.json
            body = json_of(response)
            assert body["description"] == (
                "the file has more than 100 data rows, the limit per file; nothing was imported"
            )
            assert body["errors"] == {"file": {"rows": ["at most 100 data rows per file"]}}
            response.request.environ["wsgi.input"].close()  # the test client's own body
            assert open_files_under(temp) == []
        assert count(app, Task) == count(app, TaskAuditEntry) == 0
        assert set(users_by_name(app)) == {moderator.username}

        # At the cap (blank lines are not rows): imported.
        report = imported(client, headers, csv_of(*rows[:50], "", ",,,,,", *rows[50:100]))
        assert (report["rows"], report["created"], report["failed"]) == (100, 100, 0)


def test_a_job_over_the_rows_cap_fails_saying_why_with_nothing_written(
    app: APIFlask, moderator: Account, tmp_path: Path
) -> None:
    uploads = tmp_path / "uploads"
    rows = [f"Row {i},,TRUE,LOW,,new_user_{i}" for i in range(6)]
    with app_like(
        app, csv_async_threshold_bytes=100, upload_dir=str(uploads), csv_max_rows_per_file=5
    ) as capped:  # always eager: the job runs inside the upload request
        client = capped.test_client()
        headers = login_to(client, moderator)
        status_url = queue_upload(client, headers, csv_of(*rows))
        status = job_status(client, headers, status_url)
        assert (status["state"], status["result"]) == ("failed", None)
        assert status["error"] == (
            "refused, nothing imported: the file has more than 5 data rows, the limit per "
            "file; nothing was imported"
        )
        assert count(app, Task) == 0
        assert set(users_by_name(app)) == {moderator.username}
        assert list(uploads.iterdir()) == []

        at_cap = job_status(client, headers, queue_upload(client, headers, csv_of(*rows[:5])))
        assert (at_cap["state"], at_cap["result"]["created"]) == ("succeeded", 5)


def test_the_cli_refuses_a_file_over_the_rows_cap(
    app: APIFlask, admin: Account, tmp_path: Path
) -> None:
    path = tmp_path / "three.csv"
    path.write_text(csv_of(*(f"Row {i},,TRUE,LOW,,someone_{i}" for i in range(3))))
    with app_like(app, csv_max_rows_per_file=2) as capped:
        result = capped.test_cli_runner().invoke(args=["import-csv", str(path)])
    assert result.exit_code != 0
    assert "more than 2 data rows" in result.output
    assert count(app, Task) == 0
    assert set(users_by_name(app)) == {admin.username}
    assert path.exists()  # the operator's own file: read, never deleted


# --- CSV_MAX_NEW_ACCOUNTS_PER_FILE -------------------------------------------------------------


def test_rows_naming_unknown_assignees_beyond_the_account_cap_fail(
    app: APIFlask, moderator: Account, alice: Account
) -> None:
    """A cap of 2 over batches of 2 rows: the first two unknown names in file order get
    accounts; rows naming a third fail (each counted and reported), the others import. Existing
    accounts do not count. A dry run reports the same and writes nothing."""
    content = csv_of(
        "T1,,TRUE,LOW,,alice",  # existing: matched, not counted
        "T2,,TRUE,LOW,,new_one",  # account 1
        "T3,,TRUE,LOW,,new_two",  # account 2
        "T4,,TRUE,LOW,,new_three",  # over the cap
        "T5,,TRUE,LOW,,NEW_ONE",  # made already
        "T6,,TRUE,LOW,,new_three",  # over the cap
        "T7,,TRUE,LOW,,",
    )
    expected = {"rows": 7, "created": 5, "skipped_duplicates": 0, "failed": 2, "users_created": 2}
    errors = [
        {"line": line, "column": "assigned_user", "message": over_account_cap(2)} for line in (5, 7)
    ]
    with app_like(app, csv_max_new_accounts_per_file=2, csv_batch_rows=2) as capped:
        client = capped.test_client()
        headers = login_to(client, moderator)
        dry = imported(client, headers, content, dry_run=True)
        assert without_errors(dry) == {**expected, "dry_run": True}
        assert dry["errors"] == errors
        assert count(app, Task) == 0
        assert set(users_by_name(app)) == {moderator.username, alice.username}

        report = imported(client, headers, content)
        assert without_errors(report) == {**expected, "dry_run": False}
        assert report["errors"] == errors
    assert set(tasks_in_db(app)) == {"T1", "T2", "T3", "T5", "T7"}
    assert set(users_by_name(app)) == {moderator.username, alice.username, "new_one", "new_two"}


def test_a_cap_of_zero_new_accounts_imports_only_known_assignees(
    app: APIFlask, moderator: Account, alice: Account
) -> None:
    with app_like(app, csv_max_new_accounts_per_file=0) as capped:
        client = capped.test_client()
        report = imported(
            client, login_to(client, moderator), csv_of("A,,TRUE,LOW,,alice", "B,,TRUE,LOW,,bob")
        )
    assert (report["created"], report["failed"], report["users_created"]) == (1, 1, 0)
    assert report["errors"] == [
        {"line": 3, "column": "assigned_user", "message": over_account_cap(0)}
    ]
    assert "bob" not in users_by_name(app)


# --- the assignee rule -------------------------------------------------------------------------


def test_an_account_registered_after_the_upload_gets_none_of_its_tasks(
    app: APIFlask, moderator: Account, alice: Account, tmp_path: Path
) -> None:
    """The file is uploaded (its job created), then someone registers `john_doe`, then the job
    runs: john_doe's row fails and creates nothing; john_doe's account is untouched. alice,
    registered before the upload, is matched; unknown names get accounts within the cap."""
    uploads = tmp_path / "uploads"
    content = csv_of(
        "For Alice,,TRUE,LOW,,alice",
        "For John,,TRUE,HIGH,,john_doe",
        "For Newbie,,TRUE,LOW,,newbie",
        "For Another,,TRUE,LOW,,another_newbie",  # over the cap of 1
        "Also for John,,FALSE,LOW,,JOHN_DOE",
    )
    with deferring_app(app, uploads, csv_max_new_accounts_per_file=1) as deferring:
        client = deferring.test_client()
        headers = login_to(client, moderator)
        status_url = queue_upload(client, headers, content)
        job = the_one_queued_job(deferring)

        body = {"username": "john_doe", "email": "john@example.com", "password": "a passphrase!"}
        registered = client.post("/register", json=body)
        assert registered.status_code == 201, registered.json
        john_id = json_of(registered)["id"]

        run_job(deferring, job)

        status = job_status(client, headers, status_url)
    assert status["state"] == "succeeded", status
    report = status["result"]
    assert without_errors(report) == {
        "rows": 5,
        "created": 2,
        "skipped_duplicates": 0,
        "failed": 3,
        "users_created": 1,
        "dry_run": False,
    }
    assert report["errors"] == [
        {"line": 3, "column": "assigned_user", "message": CREATED_AFTER_UPLOAD},
        {"line": 5, "column": "assigned_user", "message": over_account_cap(1)},
        {"line": 6, "column": "assigned_user", "message": CREATED_AFTER_UPLOAD},
    ]
    tasks = tasks_in_db(app)
    assert set(tasks) == {"For Alice", "For Newbie"}
    assert tasks["For Alice"]["assigned_user_id"] == alice.id
    assert all(task["assigned_user_id"] != john_id for task in tasks.values())
    john = users_by_name(app)["john_doe"]
    assert (john.id, john.email, john.is_active) == (john_id, "john@example.com", True)
    assert "another_newbie" not in users_by_name(app)
    assert list(uploads.iterdir()) == []


def test_the_synchronous_path_matches_only_accounts_older_than_the_request(
    app: APIFlask, client: FlaskClient, moderator: Account, make_user: Any
) -> None:
    """An account whose created_at is later than the request (registered while the file was
    being imported) is not matched."""
    late = make_user("late_comer")
    with app.app_context():
        later = utcnow() + timedelta(minutes=5)
        db.session.execute(update(User).where(User.id == late.id).values(created_at=later))
        db.session.commit()
    report = imported(
        client,
        login_to(client, moderator),
        csv_of("Early,,TRUE,LOW,,mod_mary", "Late,,TRUE,LOW,,late_comer"),
    )
    assert (report["created"], report["failed"], report["users_created"]) == (1, 1, 0)
    assert report["errors"] == [
        {"line": 3, "column": "assigned_user", "message": CREATED_AFTER_UPLOAD}
    ]
    assert set(tasks_in_db(app)) == {"Early"}


def test_a_job_run_again_after_a_crash_finds_the_placeholders_its_first_run_made(
    app: APIFlask, moderator: Account, tmp_path: Path
) -> None:
    """Accounts made by the first run are newer than the upload, but are still placeholders
    (inactive, no password): the second run reuses them, and skips the rows imported before,
    rather than failing them. The crash is played by putting back what a dead worker leaves: a
    running job and its stored file."""
    uploads = tmp_path / "uploads"
    content = csv_of(*(f"Task {i},,TRUE,LOW,,placeholder_{i % 3}" for i in range(6)))
    with deferring_app(app, uploads, csv_max_new_accounts_per_file=3) as deferring:
        client = deferring.test_client()
        headers = login_to(client, moderator)
        status_url = queue_upload(client, headers, content)
        job = the_one_queued_job(deferring)
        stored = uploads / f"{job.args[0]}.csv"
        saved = stored.read_bytes()
        run_job(deferring, job)
        first = job_status(client, headers, status_url)["result"]
        assert (first["created"], first["users_created"], first["failed"]) == (6, 3, 0)

        stored.write_bytes(saved)
        with deferring.app_context():
            db.session.execute(
                update(Job)
                .where(Job.id == job.args[0])
                .values(state=JobState.RUNNING, finished_at=None)
            )
            db.session.commit()
        run_job(deferring, job)

        again = job_status(client, headers, status_url)
    assert again["state"] == "succeeded"
    assert without_errors(again["result"]) == {
        "rows": 6,
        "created": 0,
        "skipped_duplicates": 6,
        "failed": 0,
        "users_created": 0,
        "dry_run": False,
    }
    with app.app_context():
        placeholders = db.session.scalars(select(User.username).where(User.password_hash.is_(None)))
        assert sorted(placeholders) == ["placeholder_0", "placeholder_1", "placeholder_2"]
        db.session.remove()
    assert count(app, Task) == 6
