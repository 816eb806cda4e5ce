"""`Idempotency-Key` on `POST /task`, `POST /upload-csv` and `POST /admin/jobs/daily-log` (#25).

A retry with the same key and request gets the first answer (status, body, Location) marked
`Idempotent-Replayed: true`, and nothing is done twice; the same key with another body or on
another endpoint is a 422; a key still in progress is a 409 with Retry-After; keys are per user,
expire after 24 hours, and only successful answers are kept. On SQLite and PostgreSQL; the
concurrent case on PostgreSQL only. Expiry and abandonment are made by moving the key's row into
the past in the database itself.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from app.extensions import db
from app.jobs.celery_app import PURGE_IDEMPOTENCY_KEYS_JOB, beat_schedule
from app.jobs.idempotency import purge_expired_keys
from app.models import IdempotencyKey, Job, LoaderRun, Task
from app.models.types import utcnow
from app.services.idempotency import (
    IDEMPOTENCY_KEY_TTL,
    IN_PROGRESS_TAKEOVER_AFTER,
    purge_expired_idempotency_keys,
)
from tests.conftest import Account, MakeApp
from tests.conftest import test_settings as settings_for
from tests.security.helpers import race

Headers = dict[str, str]
Login = Callable[[Account], Headers]

KEY = "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f"
REPLAYED = "Idempotent-Replayed"
TASK = {"task_name": "write the report", "priority": "HIGH"}
SMALL_CSV = b"task_name,status,priority\nfirst,TRUE,LOW\nsecond,FALSE,HIGH\n"
DAY = date(2030, 3, 14)
OPERATIONS = (("/task", "post"), ("/upload-csv", "post"), ("/admin/jobs/daily-log", "post"))


# --- helpers ---------------------------------------------------------------------------------


def with_key(headers: Headers, key: str | None = KEY) -> Headers:
    return headers if key is None else {**headers, "Idempotency-Key": key}


def post_task(
    client: FlaskClient, headers: Headers, body: Any = None, key: str | None = KEY
) -> TestResponse:
    return client.post("/task", json=TASK if body is None else body, headers=with_key(headers, key))


def upload(
    client: FlaskClient, headers: Headers, content: bytes, key: str | None = KEY, **fields: str
) -> TestResponse:
    data: dict[str, Any] = {"file": (io.BytesIO(content), "tasks.csv"), **fields}
    return client.post("/upload-csv", data=data, headers=with_key(headers, key))


def count(app: APIFlask, model: type) -> int:
    with app.app_context():
        total = db.session.scalar(select(func.count()).select_from(model))
        db.session.remove()
        return int(total or 0)


def set_key_rows(app: APIFlask, **values: Any) -> None:
    """Change every stored key directly in the database (as time or a crash would)."""
    with app.app_context():
        db.session.execute(update(IdempotencyKey).values(**values))
        db.session.commit()
        db.session.remove()


def assert_replay_of(replay: TestResponse, first: TestResponse) -> None:
    assert replay.status_code == first.status_code
    assert replay.data == first.data
    assert replay.headers.get("Location") == first.headers.get("Location")
    assert replay.headers[REPLAYED] == "true"
    assert replay.mimetype == "application/json"


def assert_key_error(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.json
    body = response.get_json()
    assert set(body) <= {"code", "message", "description", "errors"}
    assert body["code"] == status
    return dict(body)


# --- POST /task ------------------------------------------------------------------------------


def test_a_retry_with_the_same_key_creates_one_task_and_gets_the_first_answer(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)

    first = post_task(client, headers)
    retry = post_task(client, headers)

    assert first.status_code == 201, first.json
    assert REPLAYED not in first.headers
    assert first.headers["Location"].endswith(f"/task/{first.json['id']}")
    assert_replay_of(retry, first)
    assert count(app, Task) == 1


def test_the_same_json_with_its_keys_in_another_order_is_the_same_request(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = with_key(login(alice))
    first = client.post("/task", json=TASK, headers=headers)
    reordered = '{ "priority" : "HIGH",\n  "task_name": "write the report" }'

    retry = client.post("/task", data=reordered, content_type="application/json", headers=headers)

    assert_replay_of(retry, first)
    assert count(app, Task) == 1


def test_the_same_key_with_another_body_is_422(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)
    assert post_task(client, headers).status_code == 201

    other = post_task(client, headers, {**TASK, "task_name": "another task"})

    body = assert_key_error(other, 422)
    assert "different request" in body["description"]
    assert list(body["errors"]["headers"]) == ["Idempotency-Key"]
    assert REPLAYED not in other.headers
    assert count(app, Task) == 1


def test_the_same_key_on_another_endpoint_is_422(
    app: APIFlask, client: FlaskClient, admin: Account, login: Login
) -> None:
    headers = login(admin)
    assert post_task(client, headers).status_code == 201

    job = client.post(
        "/admin/jobs/daily-log", json={"date": DAY.isoformat()}, headers=with_key(headers)
    )

    assert "different request" in assert_key_error(job, 422)["description"]
    assert count(app, Job) == 0
    assert count(app, LoaderRun) == 0


def test_keys_are_per_user(
    app: APIFlask, client: FlaskClient, alice: Account, bob: Account, login: Login
) -> None:
    alices, bobs = login(alice), login(bob)

    for_alice = post_task(client, alices)
    for_bob = post_task(client, bobs, {**TASK, "task_name": "bob's own"})

    assert (for_alice.status_code, for_bob.status_code) == (201, 201)
    assert REPLAYED not in for_bob.headers
    assert for_bob.json["created_by_id"] == bob.id
    assert_replay_of(post_task(client, alices), for_alice)
    assert_replay_of(post_task(client, bobs, {**TASK, "task_name": "bob's own"}), for_bob)
    assert count(app, Task) == 2


def test_without_the_header_every_request_is_done(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)

    first, second = (post_task(client, headers, key=None) for _ in range(2))

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json["id"] != second.json["id"]
    assert REPLAYED not in first.headers and REPLAYED not in second.headers
    assert count(app, Task) == 2
    assert count(app, IdempotencyKey) == 0


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("two words", id="space"),
        pytest.param("tab\there", id="control-character"),
        pytest.param("caf\xe9", id="not-ascii"),
        pytest.param("k" * 256, id="256-characters"),
    ],
)
def test_a_malformed_key_is_422_and_does_nothing(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login, key: str
) -> None:
    response = post_task(client, login(alice), key=key)

    body = assert_key_error(response, 422)
    [message] = body["errors"]["headers"]["Idempotency-Key"]
    assert "1 to 255 visible ASCII characters" in message
    assert count(app, Task) == count(app, IdempotencyKey) == 0


@pytest.mark.parametrize("key", ["!", "~" * 255, "order-42/retry:1"])
def test_any_visible_ascii_key_of_1_to_255_characters_is_accepted(
    client: FlaskClient, alice: Account, login: Login, key: str
) -> None:
    headers = login(alice)
    first = post_task(client, headers, key=key)
    assert first.status_code == 201, first.json
    assert_replay_of(post_task(client, headers, key=key), first)


def test_a_request_that_fails_validation_is_not_remembered(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)

    invalid = post_task(client, headers, {"priority": "HIGH"})  # no task_name
    assert invalid.status_code == 422
    assert "json" in invalid.json["errors"]
    assert count(app, IdempotencyKey) == 0

    fixed = post_task(client, headers)  # the same key, now with a valid body
    assert fixed.status_code == 201, fixed.json
    assert REPLAYED not in fixed.headers


def test_a_request_the_service_refuses_is_not_remembered(
    app: APIFlask, client: FlaskClient, alice: Account, bob: Account, login: Login
) -> None:
    headers = login(alice)

    refused = post_task(client, headers, {**TASK, "assigned_user_id": bob.id})  # not herself
    assert refused.status_code == 403, refused.json
    assert count(app, IdempotencyKey) == 0
    again = post_task(client, headers, {**TASK, "assigned_user_id": bob.id})
    assert again.status_code == 403  # done again, not a replay of the refusal
    assert REPLAYED not in again.headers

    allowed = post_task(client, headers, {**TASK, "assigned_user_id": alice.id})
    assert allowed.status_code == 201, allowed.json
    assert count(app, Task) == 1


# --- expiry, requests in progress and abandoned ones -----------------------------------------


def test_an_expired_key_is_done_again(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)
    first = post_task(client, headers)
    long_ago = utcnow() - IDEMPOTENCY_KEY_TTL - timedelta(minutes=1)
    set_key_rows(app, created_at=long_ago, expires_at=long_ago + IDEMPOTENCY_KEY_TTL)

    again = post_task(client, headers)

    assert again.status_code == 201, again.json
    assert REPLAYED not in again.headers
    assert again.json["id"] != first.json["id"]
    assert count(app, Task) == 2
    assert_replay_of(post_task(client, headers), again)  # and the new answer is kept


def test_an_expired_key_may_be_used_for_another_request(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)
    assert post_task(client, headers).status_code == 201
    set_key_rows(app, expires_at=utcnow() - timedelta(seconds=1))

    other = post_task(client, headers, {**TASK, "task_name": "another task"})

    assert other.status_code == 201, other.json
    assert count(app, Task) == 2


def test_the_purge_deletes_expired_keys_only(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)
    for key in ("old-1", "old-2"):
        assert post_task(client, headers, key=key).status_code == 201
    set_key_rows(app, expires_at=utcnow() - timedelta(seconds=1))
    assert post_task(client, headers, key="live").status_code == 201

    with app.app_context():
        purged = purge_expired_idempotency_keys(utcnow())
        remaining = list(db.session.scalars(select(IdempotencyKey.key)))
        db.session.remove()

    assert purged == 2
    assert remaining == ["live"]


def test_beat_purges_expired_keys_every_hour(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    entry = beat_schedule(settings_for(app.config["SQLALCHEMY_DATABASE_URI"]))[
        "purge-idempotency-keys"
    ]
    assert entry["task"] == PURGE_IDEMPOTENCY_KEYS_JOB
    assert post_task(client, login(alice), key="old").status_code == 201
    set_key_rows(app, expires_at=utcnow() - timedelta(seconds=1))

    with app.app_context():
        assert purge_expired_keys() == 1  # the job beat runs
        assert list(db.session.scalars(select(IdempotencyKey.key))) == []
        db.session.remove()


def test_a_key_whose_request_is_still_in_progress_is_409_with_retry_after(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)
    first = post_task(client, headers)
    # As if the first request were still working: claimed a moment ago, no answer yet.
    set_key_rows(app, response_status=None, response_body=None, response_location=None)

    retry = post_task(client, headers)

    body = assert_key_error(retry, 409)
    assert body["description"].startswith(
        "a request with this Idempotency-Key is still in progress"
    )
    assert int(retry.headers["Retry-After"]) >= 1
    assert REPLAYED not in retry.headers
    assert count(app, Task) == 1
    # Another request with the key is refused as such, in progress or not.
    other = post_task(client, headers, {**TASK, "task_name": "another task"})
    assert_key_error(other, 422)
    assert first.status_code == 201


def test_a_claim_abandoned_for_over_a_minute_is_taken_over_by_a_retry(
    app: APIFlask, client: FlaskClient, alice: Account, login: Login
) -> None:
    headers = login(alice)
    assert post_task(client, headers).status_code == 201
    # The first request died after its claim: no answer, claimed over a minute ago.
    claimed = utcnow() - IN_PROGRESS_TAKEOVER_AFTER - timedelta(seconds=1)
    set_key_rows(app, response_status=None, response_body=None, created_at=claimed)

    retry = post_task(client, headers)

    assert retry.status_code == 201, retry.json
    assert REPLAYED not in retry.headers
    assert count(app, Task) == 2
    assert_replay_of(post_task(client, headers), retry)


def test_concurrent_requests_with_one_key_create_one_task(
    app: APIFlask, backend: str, alice: Account, login: Login
) -> None:
    if backend != "postgresql":
        pytest.skip("concurrent writers are a PostgreSQL matter (SQLite serialises them)")
    headers = with_key(login(alice))

    def send() -> TestResponse:
        return app.test_client().post("/task", json=TASK, headers=headers)

    answers = race([send for _ in range(10)])

    done = [a for a in answers if a.status_code == 201 and REPLAYED not in a.headers]
    replayed = [a for a in answers if a.status_code == 201 and REPLAYED in a.headers]
    in_progress = [a for a in answers if a.status_code == 409]
    assert len(done) == 1, [(a.status_code, a.json) for a in answers]
    assert len(done) + len(replayed) + len(in_progress) == len(answers)
    for answer in replayed:
        assert_replay_of(answer, done[0])
    for answer in in_progress:
        assert answer.headers["Retry-After"] == "1"
    assert count(app, Task) == 1


# --- POST /upload-csv ------------------------------------------------------------------------


def test_an_upload_retried_with_its_key_imports_once(
    app: APIFlask, client: FlaskClient, moderator: Account, login: Login
) -> None:
    headers = login(moderator)

    first = upload(client, headers, SMALL_CSV)
    retry = upload(client, headers, SMALL_CSV)  # a new multipart boundary, the same request

    assert first.status_code == 200, first.json
    assert first.json["created"] == 2
    assert_replay_of(retry, first)
    assert count(app, Task) == 2


def test_an_upload_with_the_key_of_another_file_or_fields_is_422(
    app: APIFlask, client: FlaskClient, moderator: Account, login: Login
) -> None:
    headers = login(moderator)
    assert upload(client, headers, SMALL_CSV).status_code == 200

    other_file = upload(client, headers, SMALL_CSV.replace(b"second", b"third"))
    dry_run = upload(client, headers, SMALL_CSV, dry_run="true")

    assert_key_error(other_file, 422)
    assert_key_error(dry_run, 422)
    assert count(app, Task) == 2


def test_a_large_upload_retried_with_its_key_gets_the_same_job(
    app: APIFlask, make_app: MakeApp, moderator: Account, tmp_path: Path
) -> None:
    jobbing = make_app(csv_async_threshold_bytes=10, upload_dir=str(tmp_path))
    client = jobbing.test_client()
    token = client.post(
        "/login", json={"username": moderator.username, "password": moderator.password}
    ).json["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    first = upload(client, headers, SMALL_CSV)
    retry = upload(client, headers, SMALL_CSV)

    assert first.status_code == 202, first.json
    assert first.headers["Location"].endswith(first.json["status_url"])
    assert_replay_of(retry, first)
    assert retry.json["job_id"] == first.json["job_id"]
    assert count(app, Job) == 1
    assert count(app, Task) == 2


# --- POST /admin/jobs/daily-log --------------------------------------------------------------


def test_a_daily_log_job_retried_with_its_key_is_started_once(
    app: APIFlask, client: FlaskClient, admin: Account, login: Login
) -> None:
    headers = with_key(login(admin))
    body = {"date": DAY.isoformat()}

    first = client.post("/admin/jobs/daily-log", json=body, headers=headers)
    retry = client.post("/admin/jobs/daily-log", json=body, headers=headers)

    assert first.status_code == 202, first.json
    assert first.headers["Location"].endswith(f"/admin/jobs/{first.json['job_id']}")
    assert_replay_of(retry, first)
    assert retry.json["job_id"] == first.json["job_id"]
    assert count(app, Job) == 1
    assert count(app, LoaderRun) == 1


# --- the OpenAPI document --------------------------------------------------------------------


def test_the_openapi_document_shows_the_header_and_its_answers(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json

    for path, method in OPERATIONS:
        operation = spec["paths"][path][method]
        [header] = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key"
        assert header["required"] is False
        assert header["schema"]["maxLength"] == 255
        assert "409" in header["schema"]["description"]
        assert "Retry-After" in operation["responses"]["409"]["headers"]
        assert "Idempotency-Key" in operation["responses"]["422"]["description"]
