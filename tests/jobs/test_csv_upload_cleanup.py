"""A CSV import job never leaves its upload behind, whatever its outcome; nor does the
synchronous path leave a temporary file. On SQLite and PostgreSQL.

The jobs run in this process, as Celery's eager run (`Task.apply`) of the very message the API
queued: the app queues on kombu's in-process broker (`memory://`) instead of running the job at
once, so a test can act between the upload and the job (delete the uploader, deliver the job
twice) and see the stored file before and after. The API tests' always-eager path (the job runs
inside the upload request) is covered too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from celery import _state as celery_state
from flask.testing import FlaskClient
from sqlalchemy import delete, select

from app import create_app
from app.extensions import db
from app.models import Role, Task, User
from app.models.enums import JobState
from app.models.job import Job
from tests.api.test_csv_import import (
    SAMPLE,
    SAMPLE_REPORT,
    count,
    csv_of,
    json_of,
    login_to,
    upload,
    users_by_name,
)
from tests.conftest import Account
from tests.conftest import test_settings as settings_for

DEFAULT_QUEUE = "celery"
JOB_THRESHOLD_BYTES = 100  # the sample (~640 bytes) becomes a job
# Readable for its first 8 KiB and more (what the upload's header check reads), not further.
UNREADABLE_FAR_DOWN = csv_of(
    *(f"Row {i},,TRUE,LOW,," for i in range(1000))
).encode() + "Caf\u00e9,,TRUE,LOW,,\n".encode("latin-1")


# --- helpers (tests/api/test_csv_import_caps.py uses them too) ---------------------------------


@contextlib.contextmanager
def app_like(app: APIFlask, **overrides: object) -> Iterator[APIFlask]:
    """Another app on `app`'s (migrated) database, with settings of its own, for a block. Each
    create_app() makes its Celery app the current one: the one before is put back after."""
    default, current = celery_state.default_app, getattr(celery_state._tls, "current_app", None)
    other = create_app(settings_for(app.config["SQLALCHEMY_DATABASE_URI"], **overrides))
    try:
        yield other
    finally:
        other.extensions["celery"].close()
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        celery_state.set_default_app(default)
        celery_state._set_current_app(current)


@contextlib.contextmanager
def deferring_app(app: APIFlask, upload_dir: Path, **overrides: object) -> Iterator[APIFlask]:
    """An app that queues its jobs on an in-process broker rather than running them at once,
    with the sample over its job threshold; take_queued_jobs() and run_job() play the worker."""
    settings: dict[str, object] = {
        "celery_always_eager": False,
        "celery_broker_url": "memory://",
        "upload_dir": str(upload_dir),
        "csv_async_threshold_bytes": JOB_THRESHOLD_BYTES,
        **overrides,
    }
    with app_like(app, **settings) as deferring:
        # The in-process broker is global to the process: start and end with an empty queue.
        take_queued_jobs(deferring)
        try:
            yield deferring
        finally:
            take_queued_jobs(deferring)


@dataclass(frozen=True)
class QueuedJob:
    name: str
    args: list[Any]
    kwargs: dict[str, Any]


def take_queued_jobs(app: APIFlask) -> list[QueuedJob]:
    """Every job message `app` has queued, taken off its broker as a worker would."""
    celery = app.extensions["celery"]
    taken = []
    with celery.connection_for_read() as connection:
        queue = connection.SimpleQueue(DEFAULT_QUEUE, no_ack=True)
        try:
            while True:
                try:
                    message = queue.get(block=False)
                except queue.Empty:
                    break
                args, kwargs, _ = message.decode()
                taken.append(QueuedJob(message.headers["task"], args, kwargs))
        finally:
            queue.close()
    return taken


def run_job(app: APIFlask, job: QueuedJob) -> Any:
    """Run a taken job in this process (Celery's eager run, inside `app`'s context as a worker
    runs it); its exception, if any, is raised (task_eager_propagates)."""
    celery = app.extensions["celery"]
    return celery.tasks[job.name].apply(args=job.args, kwargs=job.kwargs).get()


def the_one_queued_job(app: APIFlask) -> QueuedJob:
    jobs = take_queued_jobs(app)
    assert len(jobs) == 1, jobs
    return jobs[0]


def queue_upload(
    client: FlaskClient, headers: dict[str, str], content: bytes | str, **kw: Any
) -> str:
    """Upload a file over the job threshold; returns its job's status URL."""
    response = upload(client, headers, content, **kw)
    assert response.status_code == 202, response.json
    return str(json_of(response)["status_url"])


def job_status(client: FlaskClient, headers: dict[str, str], status_url: str) -> dict[str, Any]:
    response = client.get(status_url, headers=headers)
    assert response.status_code == 200, response.json
    return json_of(response)


def open_files_under(directory: Path) -> list[str]:
    """Files this process has open under `directory`, anonymous ones included (a temporary file
    made with O_TMPFILE, or deleted at once, has no name in the directory listing)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{directory}{os.sep}"):
                found.append(target)
    return found


# --- the job path ------------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True], ids=["import", "dry-run"])
def test_a_job_that_succeeds_deletes_its_upload(
    app: APIFlask, moderator: Account, tmp_path: Path, dry_run: bool
) -> None:
    uploads = tmp_path / "uploads"
    with deferring_app(app, uploads) as deferring:
        client = deferring.test_client()
        headers = login_to(client, moderator)
        status_url = queue_upload(client, headers, SAMPLE, dry_run=dry_run)
        job = the_one_queued_job(deferring)
        assert [path.name for path in uploads.iterdir()] == [f"{job.args[0]}.csv"]  # stored

        assert run_job(deferring, job) == {**SAMPLE_REPORT, "dry_run": dry_run}

        status = job_status(client, headers, status_url)
        assert (status["state"], status["error"]) == ("succeeded", None)
    assert list(uploads.iterdir()) == []
    assert count(app, Task) == (0 if dry_run else 7)


def test_a_job_refused_for_an_unreadable_file_deletes_its_upload(
    app: APIFlask, moderator: Account, tmp_path: Path
) -> None:
    """The header check at upload passes; the job's reading pass finds the bad byte and refuses
    the file: the job fails, saying why, without raising (the file's fault, not the worker's)."""
    uploads = tmp_path / "uploads"
    with deferring_app(app, uploads) as deferring:
        client = deferring.test_client()
        headers = login_to(client, moderator)
        status_url = queue_upload(client, headers, UNREADABLE_FAR_DOWN)
        job = the_one_queued_job(deferring)
        assert len(list(uploads.iterdir())) == 1

        run_job(deferring, job)

        status = job_status(client, headers, status_url)
        assert status["state"] == "failed"
        assert status["error"] == "refused, nothing imported: the file is not UTF-8 text"
        assert status["result"] is None
        assert status["started_at"] is None  # refused before it started
        assert status["finished_at"] is not None
    assert list(uploads.iterdir()) == []
    assert count(app, Task) == 0


def test_a_job_that_raises_deletes_its_upload(
    app: APIFlask, admin: Account, make_user: Any, tmp_path: Path
) -> None:
    """The uploader's account is gone by the time the job runs: the job raises (its worker logs
    it), records the error, and still deletes the upload."""
    leaving = make_user("leaving_mod", Role.MODERATOR)
    uploads = tmp_path / "uploads"
    with deferring_app(app, uploads) as deferring:
        client = deferring.test_client()
        status_url = queue_upload(client, login_to(client, leaving), SAMPLE)
        job = the_one_queued_job(deferring)
        with deferring.app_context():
            db.session.execute(delete(User).where(User.id == leaving.id))
            db.session.commit()

        with pytest.raises(RuntimeError, match="no longer exists"):
            run_job(deferring, job)

        status = job_status(client, login_to(client, admin), status_url)
        assert status["state"] == "failed"
        assert status["error"] == f"RuntimeError: user {leaving.id} no longer exists"
    assert list(uploads.iterdir()) == []
    assert count(app, Task) == 0


def test_a_finished_job_delivered_again_is_not_run_and_keeps_no_upload(
    app: APIFlask, moderator: Account, tmp_path: Path
) -> None:
    """A worker that dies after the job succeeded but before acknowledging it gets the message
    again (acks_late). The second delivery neither imports again nor rewrites the job's record,
    and a stored file it finds (here: put back) is deleted."""
    uploads = tmp_path / "uploads"
    with deferring_app(app, uploads) as deferring:
        client = deferring.test_client()
        headers = login_to(client, moderator)
        status_url = queue_upload(client, headers, SAMPLE)
        job = the_one_queued_job(deferring)
        stored = uploads / f"{job.args[0]}.csv"
        content = stored.read_bytes()
        run_job(deferring, job)
        first = job_status(client, headers, status_url)
        assert first["state"] == "succeeded"

        stored.write_bytes(content)
        run_job(deferring, job)

        again = job_status(client, headers, status_url)
        assert again == first  # still the first run's result: 7 created, not 7 skipped
    assert list(uploads.iterdir()) == []
    assert count(app, Task) == 7


def test_a_failing_eager_job_answers_202_and_leaves_no_upload(
    app: APIFlask, moderator: Account, tmp_path: Path
) -> None:
    """Always eager (the API tests' and a broker-less development setup): the job runs inside
    the upload request. Its failure is the job's, as with a worker: 202 and a failed job, not a
    503 claiming the queue is down; and no stored file."""
    uploads = tmp_path / "uploads"
    with app_like(
        app, csv_async_threshold_bytes=JOB_THRESHOLD_BYTES, upload_dir=str(uploads)
    ) as eager:
        client = eager.test_client()
        headers = login_to(client, moderator)
        status_url = queue_upload(client, headers, UNREADABLE_FAR_DOWN)
        status = job_status(client, headers, status_url)
        assert status["state"] == "failed"
        assert "not UTF-8" in status["error"]
    assert list(uploads.iterdir()) == []
    assert count(app, Task) == 0


def test_a_job_that_cannot_be_queued_leaves_no_upload(
    app: APIFlask, moderator: Account, tmp_path: Path
) -> None:
    uploads = tmp_path / "uploads"
    unreachable = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    with app_like(
        app,
        celery_always_eager=False,
        celery_broker_url=unreachable,
        csv_async_threshold_bytes=JOB_THRESHOLD_BYTES,
        upload_dir=str(uploads),
    ) as broken:
        client = broken.test_client()
        response = upload(client, login_to(client, moderator), SAMPLE)
        assert response.status_code == 503, response.json
        with broken.app_context():
            jobs = list(db.session.scalars(select(Job)))
            assert [(j.state, j.error.startswith("could not queue")) for j in jobs] == [
                (JobState.FAILED, True)
            ]
            db.session.remove()
    assert list(uploads.iterdir()) == []


def test_an_upload_that_cannot_be_stored_is_503_and_its_job_failed(
    app: APIFlask, moderator: Account, tmp_path: Path
) -> None:
    """UPLOAD_DIR unusable (here a regular file; a full disk alike): the job is failed with the
    reason rather than left queued for ever, and the client may retry."""
    not_a_directory = tmp_path / "uploads"
    not_a_directory.write_text("")
    with app_like(
        app, csv_async_threshold_bytes=JOB_THRESHOLD_BYTES, upload_dir=str(not_a_directory)
    ) as broken:
        client = broken.test_client()
        response = upload(client, login_to(client, moderator), SAMPLE)
        assert response.status_code == 503, response.json
        assert json_of(response)["description"] == (
            "the upload could not be stored; try again later"
        )
        with broken.app_context():
            jobs = list(db.session.scalars(select(Job)))
            assert [(j.state, j.error.startswith("could not store")) for j in jobs] == [
                (JobState.FAILED, True)
            ]
            db.session.remove()
    assert not_a_directory.read_text() == ""
    assert count(app, Task) == 0


# --- the synchronous path ----------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["imported", "unreadable"])
def test_the_synchronous_path_keeps_no_temporary_file(
    app: APIFlask,
    client: FlaskClient,
    moderator: Account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    outcome: str,
) -> None:
    """A file part over 500 KiB is spooled by werkzeug to an anonymous temporary file; it is
    closed (so gone) when the request ends, whether the file was imported or refused."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see anonymous temporary files")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    padding = "x" * 6000
    content = csv_of(*(f"Row {i},{padding},TRUE,LOW,," for i in range(100))).encode()
    assert 500 * 1024 < len(content) < 2 * 1024 * 1024  # spooled to disk, under the job threshold
    if outcome == "unreadable":
        content += "Caf\u00e9,,TRUE,LOW,,\n".encode("latin-1")

    response = upload(client, login_to(client, moderator), content)

    assert response.status_code == (200 if outcome == "imported" else 400), response.json
    # The test client's own request body, spooled there too, stays open until collected.
    response.request.environ["wsgi.input"].close()
    assert open_files_under(temp) == []
    assert list(temp.iterdir()) == []
    assert count(app, Task) == (100 if outcome == "imported" else 0)
    assert set(users_by_name(app)) == {moderator.username}
