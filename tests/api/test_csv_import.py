"""CSV import end to end: `POST /upload-csv` and `flask import-csv`, on SQLite and PostgreSQL.

The sample file through the API and the CLI (tasks, statuses, priorities, created_at days in UTC,
assignees created inactive, audit entries by the uploader); every format variation (BOM, CRLF,
quoting, spellings of status, priority and dates, column order, optional columns, blank lines);
every error class (400, 413, 415, 422 and per-row errors with the 100-error cap); idempotency,
dry runs, roles, the imported accounts' activation by an admin, cache invalidation, and the
background-job path (eager here; tests/jobs/test_csv_import_job.py runs a real worker).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import aliased
from werkzeug.test import TestResponse

from app.extensions import db
from app.models import Role, Task, TaskAuditEntry, User
from app.models.job import Job
from tests.conftest import PROJECT_ROOT, Account, MakeApp

Headers = dict[str, str]
Login = Callable[[Account], Headers]
MakeUser = Callable[..., Account]

SAMPLE_PATH = PROJECT_ROOT / "samples" / "tasks.csv"
SAMPLE = SAMPLE_PATH.read_bytes()
HEADER = "task_name,description,status,priority,created_at,assigned_user"
BOM = b"\xef\xbb\xbf"
# name -> (description, status, priority, created_at day, assignee)
SAMPLE_TASKS: dict[str, tuple[str, str, str, date, str]] = {
    "Data Backup": ("Backup database daily", "active", "HIGH", date(2025, 3, 31), "john_doe"),
    "Security Audit": (
        "Review system security",
        "active",
        "MEDIUM",
        date(2025, 3, 30),
        "jane_smith",
    ),
    "API Performance Test": (
        "Run load tests on APIs",
        "active",
        "HIGH",
        date(2025, 3, 28),
        "mark_jones",
    ),
    "Code Review": (
        "Review PRs and merge pending code",
        "active",
        "MEDIUM",
        date(2025, 3, 29),
        "lisa_adams",
    ),
    "Server Update": ("Update production servers", "active", "HIGH", date(2025, 4, 1), "john_doe"),
    "Error Log Analysis": (
        "Analyze recent server errors",
        "inactive",
        "LOW",
        date(2025, 3, 31),
        "emma_watson",
    ),
    "Feature Deployment": (
        "Deploy new feature release",
        "inactive",
        "CRITICAL",
        date(2025, 4, 2),
        "robert_brown",
    ),
}
SAMPLE_ASSIGNEES = sorted({task[4] for task in SAMPLE_TASKS.values()})
SAMPLE_REPORT = {
    "rows": 7,
    "created": 7,
    "skipped_duplicates": 0,
    "failed": 0,
    "users_created": 6,
    "dry_run": False,
    "errors": [],
}
STATUS_ERROR = "status must be TRUE/FALSE, 1/0, yes/no or active/inactive"
DATE_ERROR = "created_at must be M/D/YYYY or an ISO 8601 date"


# --- helpers ---------------------------------------------------------------------------------


def midnight_utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def upload(
    client: FlaskClient,
    headers: Headers,
    content: bytes | str,
    *,
    dry_run: bool | str | None = None,
    filename: str = "tasks.csv",
) -> TestResponse:
    data: dict[str, Any] = {
        "file": (io.BytesIO(content.encode() if isinstance(content, str) else content), filename)
    }
    if dry_run is not None:
        data["dry_run"] = str(dry_run).lower()
    return client.post("/upload-csv", data=data, headers=headers)


def json_of(response: TestResponse) -> dict[str, Any]:
    body = response.get_json()
    assert isinstance(body, dict), response.data
    return body


def imported(
    client: FlaskClient, headers: Headers, content: bytes | str, **kw: Any
) -> dict[str, Any]:
    """Upload, expect 200, return the report."""
    response = upload(client, headers, content, **kw)
    assert response.status_code == 200, response.json
    return json_of(response)


def csv_of(*rows: str, header: str = HEADER, newline: str = "\n") -> str:
    return newline.join((header, *rows)) + newline


def tasks_in_db(app: APIFlask) -> dict[str, dict[str, Any]]:
    """Every task by name: its fields, the assignee's username and the creator's id."""
    assignee = aliased(User)
    with app.app_context():
        rows = db.session.execute(
            select(Task, assignee.username)
            .outerjoin(assignee, assignee.id == Task.assigned_user_id)
            .order_by(Task.id)
        ).all()
        result = {
            task.task_name: {
                "id": task.id,
                "description": task.description,
                "status": task.status.value,
                "priority": task.priority.value,
                "created_at": task.created_at,
                "assignee": username,
                "assigned_user_id": task.assigned_user_id,
                "created_by_id": task.created_by_id,
                "deleted_at": task.deleted_at,
            }
            for task, username in rows
        }
        db.session.remove()
    return result


def count(app: APIFlask, model: type) -> int:
    with app.app_context():
        total = db.session.scalar(select(func.count()).select_from(model))
        db.session.remove()
        return int(total or 0)


def users_by_name(app: APIFlask) -> dict[str, User]:
    with app.app_context():
        users = {user.username: user for user in db.session.scalars(select(User))}
        db.session.expunge_all()
        db.session.remove()
    return users


def audit_entries(app: APIFlask) -> list[TaskAuditEntry]:
    with app.app_context():
        entries = list(db.session.scalars(select(TaskAuditEntry).order_by(TaskAuditEntry.id)))
        db.session.expunge_all()
        db.session.remove()
    return entries


def assert_sample_imported(app: APIFlask, uploader: Account) -> None:
    """The sample's seven tasks, its six inactive assignees and one `created` audit entry per
    task attributed to the uploader."""
    tasks = tasks_in_db(app)
    assert set(tasks) == set(SAMPLE_TASKS)
    for name, (description, status, priority, day, assignee) in SAMPLE_TASKS.items():
        task = tasks[name]
        assert task["description"] == description
        assert task["status"] == status  # TRUE -> active, FALSE -> inactive
        assert task["priority"] == priority
        assert task["created_at"] == midnight_utc(day)  # the day, at midnight UTC
        assert task["created_at"].utcoffset() is not None
        assert task["assignee"] == assignee
        assert task["created_by_id"] == uploader.id
        assert task["deleted_at"] is None

    users = users_by_name(app)
    for name in SAMPLE_ASSIGNEES:
        user = users[name]
        assert user.is_active is False
        assert user.password_hash is None
        assert user.email == f"{name}@import.invalid"
        assert user.role == Role.USER

    entries = audit_entries(app)
    by_task = {task["id"]: (name, task) for name, task in tasks.items()}
    assert sorted(e.task_id for e in entries) == sorted(by_task)  # exactly one per task
    for entry in entries:
        name, task = by_task[entry.task_id]
        assert entry.action.value == "created"
        assert entry.actor_id == uploader.id
        # The fields the task has a value in: empty ones are left out, not `null -> null`.
        expected = {
            "task_name": name,
            "description": task["description"],
            "status": task["status"],
            "priority": task["priority"],
            "assigned_user_id": task["assigned_user_id"],
            "source": "csv_import",
        }
        assert entry.changes == {
            field: {"old": None, "new": value}
            for field, value in expected.items()
            if value is not None
        }


@pytest.fixture
def staff(moderator: Account, login: Login) -> Headers:
    return login(moderator)


def login_to(client: FlaskClient, account: Account) -> Headers:
    response = client.post(
        "/login", json={"username": account.username, "password": account.password}
    )
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {json_of(response)['access_token']}"}


# --- the sample file, through the API and the CLI ----------------------------------------------


def test_sample_file_through_the_api(
    app: APIFlask, client: FlaskClient, moderator: Account, staff: Headers
) -> None:
    assert imported(client, staff, SAMPLE) == SAMPLE_REPORT
    assert_sample_imported(app, moderator)
    assert count(app, Task) == count(app, TaskAuditEntry) == 7

    # And through the task API: UTC days, statuses and priorities as imported.
    listing = json_of(client.get("/tasks", query_string={"per_page": 100}, headers=staff))
    assert listing["total"] == 7
    by_name = {item["task_name"]: item for item in listing["items"]}
    backup = by_name["Data Backup"]
    assert backup["created_at"] == "2025-03-31T00:00:00Z"
    assert (backup["status"], backup["priority"]) == ("active", "HIGH")
    assert by_name["Feature Deployment"]["created_at"] == "2025-04-02T00:00:00Z"
    history = json_of(client.get(f"/task/{backup['id']}/history", headers=staff))
    assert [(e["action"], e["actor_id"]) for e in history["items"]] == [("created", moderator.id)]


def test_sample_file_through_the_cli(app: APIFlask, admin: Account, moderator: Account) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["import-csv", str(SAMPLE_PATH), "--as", "Mod_Mary"])
    assert result.exit_code == 0, result.output
    assert "importing tasks.csv" in result.output  # the progress bar's label
    report = json.loads(result.output[result.output.index("{") :])
    assert report == SAMPLE_REPORT
    assert_sample_imported(app, moderator)

    # Again, with no --as (the first active admin): everything skipped, nothing added.
    again = runner.invoke(args=["import-csv", str(SAMPLE_PATH)])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output[again.output.index("{") :]) == {
        **SAMPLE_REPORT,
        "created": 0,
        "skipped_duplicates": 7,
        "users_created": 0,
    }
    assert count(app, Task) == count(app, TaskAuditEntry) == 7


def test_cli_dry_run_writes_nothing_and_attributes_to_the_first_admin(
    app: APIFlask, admin: Account
) -> None:
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["import-csv", str(SAMPLE_PATH), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output[dry.output.index("{") :]) == {**SAMPLE_REPORT, "dry_run": True}
    assert count(app, Task) == count(app, TaskAuditEntry) == 0
    assert set(users_by_name(app)) == {admin.username}

    real = runner.invoke(args=["import-csv", str(SAMPLE_PATH)])
    assert real.exit_code == 0, real.output
    assert_sample_imported(app, admin)


def test_cli_errors(app: APIFlask, admin: Account, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    unknown_user = runner.invoke(args=["import-csv", str(SAMPLE_PATH), "--as", "nobody"])
    assert unknown_user.exit_code != 0
    assert "no user 'nobody'" in unknown_user.output

    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("task_name,status\nx,TRUE\n")
    result = runner.invoke(args=["import-csv", str(bad_header)])
    assert result.exit_code != 0
    assert "missing columns: priority" in result.output

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(csv_of("Café,,TRUE,LOW,,").encode("latin-1"))
    result = runner.invoke(args=["import-csv", str(latin1)])
    assert result.exit_code != 0
    assert "not UTF-8" in result.output
    assert count(app, Task) == 0


def test_cli_without_an_active_admin_asks_for_as(app: APIFlask, moderator: Account) -> None:
    result = app.test_cli_runner().invoke(args=["import-csv", str(SAMPLE_PATH)])
    assert result.exit_code != 0
    assert "no active admin" in result.output
    assert count(app, Task) == 0


# --- format variations ---------------------------------------------------------------------


@pytest.mark.parametrize("bom", [False, True], ids=["no-bom", "bom"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_bom_and_line_endings(
    app: APIFlask,
    client: FlaskClient,
    moderator: Account,
    staff: Headers,
    bom: bool,
    newline: str,
) -> None:
    content = SAMPLE.replace(b"\n", newline.encode())
    if bom:
        content = BOM + content
    assert imported(client, staff, content) == SAMPLE_REPORT
    assert_sample_imported(app, moderator)  # BOM not part of the first column's name


def test_quoted_fields_with_commas_quotes_and_newlines(
    app: APIFlask, client: FlaskClient, staff: Headers
) -> None:
    content = csv_of(
        '"Deploy, then verify","Step 1, build\nStep 2, ""ship"" it\n\nStep 3",TRUE,HIGH,,',
        '"Say ""hello""","one line",FALSE,LOW,,',
        '"Multi\nline name",,yes,low,,',
        newline="\r\n",
    )
    report = imported(client, staff, content)
    assert (report["rows"], report["created"], report["failed"]) == (3, 3, 0)
    tasks = tasks_in_db(app)
    assert tasks["Deploy, then verify"]["description"] == (
        'Step 1, build\nStep 2, "ship" it\n\nStep 3'
    )
    assert tasks['Say "hello"']["description"] == "one line"
    assert "Multi\nline name" in tasks


STATUS_WORDS = {
    "TRUE": "active",
    "true": "active",
    "True": "active",
    "1": "active",
    "yes": "active",
    "YES": "active",
    "Yes": "active",
    "y": "active",
    "Active": "active",
    " TRUE ": "active",
    "FALSE": "inactive",
    "false": "inactive",
    "False": "inactive",
    "0": "inactive",
    "no": "inactive",
    "NO": "inactive",
    "No": "inactive",
    "n": "inactive",
    "INACTIVE": "inactive",
}


def test_status_spellings(app: APIFlask, client: FlaskClient, staff: Headers) -> None:
    words = list(STATUS_WORDS)
    content = csv_of(*(f"status {i},,{word},LOW,," for i, word in enumerate(words)))
    report = imported(client, staff, content)
    assert (report["created"], report["failed"]) == (len(words), 0), report["errors"]
    tasks = tasks_in_db(app)
    for i, word in enumerate(words):
        assert tasks[f"status {i}"]["status"] == STATUS_WORDS[word], word


def test_priority_in_any_case(app: APIFlask, client: FlaskClient, staff: Headers) -> None:
    spellings = {
        "low": "LOW",
        "Low": "LOW",
        "mEdIuM": "MEDIUM",
        "medium": "MEDIUM",
        "high": "HIGH",
        " High ": "HIGH",
        "critical": "CRITICAL",
        "CRITICAL": "CRITICAL",
    }
    content = csv_of(*(f"p {i},,TRUE,{word},," for i, word in enumerate(spellings)))
    report = imported(client, staff, content)
    assert (report["created"], report["failed"]) == (len(spellings), 0), report["errors"]
    tasks = tasks_in_db(app)
    for i, word in enumerate(spellings):
        assert tasks[f"p {i}"]["priority"] == spellings[word], word


def test_created_at_formats_are_days_in_utc(
    app: APIFlask, client: FlaskClient, staff: Headers
) -> None:
    days = {
        "3/31/2025": date(2025, 3, 31),
        "03/31/2025": date(2025, 3, 31),
        "12/1/2024": date(2024, 12, 1),
        "2/29/2024": date(2024, 2, 29),
        "2025-03-31": date(2025, 3, 31),
        "2025-03-31T10:20:30": date(2025, 3, 31),
        "2025-03-31T10:20:30.123456": date(2025, 3, 31),
        "2025-03-31T10:20:30Z": date(2025, 3, 31),
        "2025-03-31 23:59:59+00:00": date(2025, 3, 31),
        # A datetime with an offset: its day in UTC.
        "2025-03-31T23:30:00-05:00": date(2025, 4, 1),
        "2025-04-01T01:00:00+02:00": date(2025, 3, 31),
    }
    content = csv_of(*(f"d {i},,TRUE,LOW,{value}," for i, value in enumerate(days)))
    report = imported(client, staff, content)
    assert (report["created"], report["failed"]) == (len(days), 0), report["errors"]
    tasks = tasks_in_db(app)
    for i, value in enumerate(days):
        assert tasks[f"d {i}"]["created_at"] == midnight_utc(days[value]), value


def test_column_order_and_header_spelling_do_not_matter(
    app: APIFlask, client: FlaskClient, moderator: Account, staff: Headers
) -> None:
    order = ["assigned_user", "priority", "created_at", "status", "description", "task_name"]
    lines = SAMPLE.decode().splitlines()
    original = lines[0].split(",")
    shuffled = [" Assigned_User", "PRIORITY ", "Created_At", "status", "Description", "TASK_NAME"]
    rows = []
    for line in lines[1:]:
        values = dict(zip(original, line.split(","), strict=True))
        rows.append(",".join(values[column] for column in order))
    assert imported(client, staff, csv_of(*rows, header=",".join(shuffled))) == SAMPLE_REPORT
    assert_sample_imported(app, moderator)


def test_optional_columns_absent_or_blank(
    app: APIFlask, client: FlaskClient, moderator: Account, staff: Headers
) -> None:
    before = datetime.now(UTC)
    only_required = csv_of("HIGH,Required only,TRUE", header="priority,task_name,status")
    assert imported(client, staff, only_required)["created"] == 1
    blank_cells = csv_of("Blank cells,  ,FALSE,LOW,  ,  ")
    assert imported(client, staff, blank_cells)["created"] == 1
    after = datetime.now(UTC)

    tasks = tasks_in_db(app)
    for name, status in (("Required only", "active"), ("Blank cells", "inactive")):
        task = tasks[name]
        assert task["description"] is None
        assert task["assignee"] is None
        assert task["status"] == status
        assert task["created_by_id"] == moderator.id
        assert before <= task["created_at"] <= after  # no created_at: the import's time
    assert count(app, User) == 1  # no placeholder account for a blank assignee


def test_blank_lines_and_whitespace_are_ignored(
    app: APIFlask, client: FlaskClient, moderator: Account, staff: Headers
) -> None:
    lines = SAMPLE.decode().splitlines()
    content = "\n".join([lines[0], "", *lines[1:4], "", "   ", ",,,,,", *lines[4:], "", ""])
    content = content.replace("TRUE", " TRUE ").replace("HIGH", "HIGH  ")
    assert imported(client, staff, content) == SAMPLE_REPORT
    assert_sample_imported(app, moderator)


def test_assignee_names_are_case_insensitive_and_existing_users_are_reused(
    app: APIFlask, client: FlaskClient, alice: Account, staff: Headers
) -> None:
    content = csv_of(
        "One,,TRUE,LOW,,ALICE",
        "Two,,TRUE,LOW,,alice",
        "Three,,TRUE,LOW,,New_Person",
        "Four,,TRUE,LOW,,new_person",
    )
    report = imported(client, staff, content)
    assert (report["created"], report["users_created"]) == (4, 1)
    tasks = tasks_in_db(app)
    assert tasks["One"]["assigned_user_id"] == tasks["Two"]["assigned_user_id"] == alice.id
    assert tasks["Three"]["assignee"] == tasks["Four"]["assignee"] == "new_person"
    users = users_by_name(app)
    assert users["alice"].is_active and users["alice"].password_hash  # untouched
    assert not users["new_person"].is_active


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (csv_of("Café,,TRUE,LOW,,").encode("latin-1"), "not UTF-8"),
        (csv_of("Task,,TRUE,LOW,,").encode("utf-16"), "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)), "UTF-8"),
        (b"\x00\x01\x02\x03", "not a CSV file"),
        (b"", "empty"),
    ],
    ids=["latin-1", "utf-16", "png", "nul-bytes", "empty"],
)
def test_unreadable_files_are_400(
    app: APIFlask, client: FlaskClient, staff: Headers, content: bytes, message: str
) -> None:
    response = upload(client, staff, content)
    assert response.status_code == 400, response.json
    assert message in json_of(response)["description"]
    assert count(app, Task) == 0


@pytest.mark.parametrize(
    "content",
    [
        'task_name,status,priority\n"quoted"trailing,TRUE,LOW\n',
        'task_name,status,priority\nok,TRUE,LOW\n"never closed,TRUE,LOW\n',
    ],
    ids=["text-after-quote", "unclosed-quote"],
)
def test_malformed_csv_is_400(
    app: APIFlask, client: FlaskClient, staff: Headers, content: str
) -> None:
    response = upload(client, staff, content)
    assert response.status_code == 400, response.json
    assert "not a valid CSV file" in json_of(response)["description"]
    assert count(app, Task) == 0


def test_unreadable_far_down_the_file_writes_nothing(
    app: APIFlask, make_app: MakeApp, moderator: Account
) -> None:
    """Batches of 10 rows: an undecodable byte or broken quoting on row 2001 (past the first
    blocks the decoder reads) answers 400 with nothing imported, not after 200 batches were
    committed."""
    small_batches = make_app(csv_batch_rows=10)
    client = small_batches.test_client()
    headers = login_to(client, moderator)
    good = csv_of(*(f"Row {i},,TRUE,LOW,," for i in range(2000))).encode()
    assert len(good) > 4 * 8192
    for tail in ("Caf\u00e9,,TRUE,LOW,,\n".encode("latin-1"), b'"Unclosed,,TRUE,LOW,,\n'):
        response = upload(client, headers, good + tail)
        assert response.status_code == 400, response.json
        assert count(app, Task) == count(app, TaskAuditEntry) == 0
    assert imported(client, headers, good)["created"] == 2000  # the same app, a good file
    assert count(app, TaskAuditEntry) == 2000


def test_over_the_size_limit_is_413(app: APIFlask, make_app: MakeApp, moderator: Account) -> None:
    limited = make_app(csv_max_upload_bytes=1000)
    client = limited.test_client()
    headers = login_to(client, moderator)
    big = csv_of(*(f"Task number {i},,TRUE,LOW,," for i in range(60)))
    assert len(big) > 1000
    response = upload(client, headers, big)
    assert response.status_code == 413, response.json
    assert json_of(response)["code"] == 413
    assert count(app, Task) == 0
    # Under the limit, the same app imports (the sample is ~640 bytes with the form around it).
    assert imported(client, headers, SAMPLE)["created"] == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"file": "task_name,status,priority\nx,TRUE,LOW\n"}},
        {"data": {"dry_run": "true"}},  # application/x-www-form-urlencoded
        {"data": SAMPLE, "content_type": "text/csv"},
    ],
    ids=["json", "urlencoded", "text-csv"],
)
def test_not_multipart_is_415(
    app: APIFlask, client: FlaskClient, staff: Headers, kwargs: dict[str, Any]
) -> None:
    response = client.post("/upload-csv", headers=staff, **kwargs)
    assert response.status_code == 415, response.json
    assert "multipart/form-data" in json_of(response)["description"]
    assert count(app, Task) == 0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("task_name,status", {"missing_columns": ["priority"]}),
        ("description,created_at", {"missing_columns": ["task_name", "status", "priority"]}),
        ("task_name,status,priority,owner", {"unknown_columns": ["owner"]}),
        ("task_name,status,priority,status", {"duplicated_columns": ["status"]}),
        (
            "task_name,task_name,state,priority,due",
            {
                "missing_columns": ["status"],
                "unknown_columns": ["state", "due"],
                "duplicated_columns": ["task_name"],
            },
        ),
    ],
    ids=["missing", "missing-all-required", "unknown", "duplicated", "all-three"],
)
def test_bad_header_is_422_naming_the_columns(
    app: APIFlask, client: FlaskClient, staff: Headers, header: str, expected: dict[str, Any]
) -> None:
    response = upload(client, staff, f"{header}\n" + ",".join(["x"] * len(header.split(","))))
    assert response.status_code == 422, response.json
    assert json_of(response)["errors"] == {"file": expected}
    for columns in expected.values():
        for column in columns:
            assert column in json_of(response)["description"]
    assert count(app, Task) == 0


def test_missing_file_field_is_422(app: APIFlask, client: FlaskClient, staff: Headers) -> None:
    response = client.post(
        "/upload-csv", data={"dry_run": "true"}, headers=staff, content_type="multipart/form-data"
    )
    assert response.status_code == 422, response.json
    assert "file" in json_of(response)["errors"]["form_and_files"]
    wrong_name = client.post(
        "/upload-csv", data={"upload": (io.BytesIO(SAMPLE), "tasks.csv")}, headers=staff
    )
    assert wrong_name.status_code == 422, wrong_name.json
    assert count(app, Task) == 0


def test_a_created_entry_lists_only_the_fields_the_row_gave(
    client: FlaskClient, staff: Headers, app: APIFlask
) -> None:
    imported(client, staff, csv_of("Bare task,,TRUE,LOW,,", "Full task,Text,no,high,,pat"))
    by_name = {e.changes["task_name"]["new"]: e.changes for e in audit_entries(app)}
    assert by_name["Bare task"] == {
        "task_name": {"old": None, "new": "Bare task"},
        "status": {"old": None, "new": "active"},
        "priority": {"old": None, "new": "LOW"},
        "source": {"old": None, "new": "csv_import"},
    }
    assert set(by_name["Full task"]) == {
        "task_name",
        "description",
        "status",
        "priority",
        "assigned_user_id",
        "source",
    }


def test_row_errors_are_reported_and_valid_rows_imported(
    app: APIFlask, client: FlaskClient, staff: Headers
) -> None:
    content = csv_of(
        "Good one,,TRUE,LOW,3/31/2025,",  # 1
        ",,TRUE,LOW,,",  # 2: no name
        "Bad status,,maybe,LOW,,",  # 3
        "Bad priority,,TRUE,urgent,,",  # 4
        "Bad date,,TRUE,LOW,31/12/2025,",  # 5
        "Not a date,,TRUE,LOW,yesterday,",  # 6
        "Short assignee,,TRUE,LOW,,ab",  # 7
        "Bad assignee,,TRUE,LOW,,has space",  # 8
        "Too many,,TRUE,LOW,,,extra",  # 9
        "Too few,TRUE,LOW",  # 10
        "Two bad cells,,nope,none,,",  # 11: two errors, one failed row
        f"{'x' * 256},,TRUE,LOW,,",  # 12: name too long
        "Good two,,0,critical,2025-04-01,someone",  # 13
    )
    report = imported(client, staff, content)
    assert {k: v for k, v in report.items() if k != "errors"} == {
        "rows": 13,
        "created": 2,
        "skipped_duplicates": 0,
        "failed": 11,
        "users_created": 1,
        "dry_run": False,
    }
    errors = report["errors"]
    assert all(set(error) == {"line", "column", "message"} for error in errors)
    assert [(e["line"], e["column"]) for e in errors] == [
        (3, "task_name"),
        (4, "status"),
        (5, "priority"),
        (6, "created_at"),
        (7, "created_at"),
        (8, "assigned_user"),
        (9, "assigned_user"),
        (10, ""),
        (11, ""),
        (12, "status"),
        (12, "priority"),
        (13, "task_name"),
    ]
    messages = {(e["line"], e["column"]): e["message"] for e in errors}
    assert "at least 1 character" in messages[(3, "task_name")]
    assert messages[(4, "status")] == STATUS_ERROR
    assert all(p in messages[(5, "priority")] for p in ("LOW", "MEDIUM", "HIGH", "CRITICAL"))
    assert messages[(6, "created_at")] == messages[(7, "created_at")] == DATE_ERROR
    assert "at least 3 characters" in messages[(8, "assigned_user")]
    assert "pattern" in messages[(9, "assigned_user")]
    assert messages[(10, "")] == "expected 6 fields as in the header, got 7"
    assert messages[(11, "")] == "expected 6 fields as in the header, got 3"
    assert "at most 255 characters" in messages[(13, "task_name")]
    assert set(tasks_in_db(app)) == {"Good one", "Good two"}
    assert count(app, TaskAuditEntry) == 2


def test_errors_give_the_files_line_numbers(client: FlaskClient, staff: Headers) -> None:
    content = (
        "task_name,description,status,priority,created_at,assigned_user\r\n"  # line 1
        'Good,"two\nlines",TRUE,LOW,,\r\n'  # lines 2-3
        "\r\n"  # line 4: blank
        "Bad status,,maybe,LOW,,\r\n"  # line 5
        'Long,"three\nline\nvalue",TRUE,urgent,,\r\n'  # lines 6-8
        "Bad date,,TRUE,LOW,someday,\r\n"  # line 9
    )
    report = imported(client, staff, content)
    assert (report["rows"], report["created"], report["failed"]) == (4, 1, 3)
    assert [(e["line"], e["column"]) for e in report["errors"]] == [
        (5, "status"),
        (6, "priority"),
        (9, "created_at"),
    ]


def test_control_characters_fail_their_row_as_through_the_api(
    app: APIFlask, client: FlaskClient, staff: Headers
) -> None:
    report = imported(
        client,
        staff,
        csv_of(
            "Bell\x07name,,TRUE,LOW,,",
            "Fine,escape \x1b[2J,TRUE,LOW,,",
            "Kept,tab\there,TRUE,LOW,,",
        ),
    )
    assert (report["created"], report["failed"]) == (1, 2)
    assert [(e["line"], e["column"]) for e in report["errors"]] == [
        (2, "task_name"),
        (3, "description"),
    ]
    assert all("control characters" in e["message"] for e in report["errors"])
    assert set(tasks_in_db(app)) == {"Kept"}


def test_at_most_100_errors_are_listed_but_every_failure_is_counted(
    app: APIFlask, client: FlaskClient, staff: Headers
) -> None:
    bad = [f"Bad {i},,perhaps,LOW,," for i in range(250)]
    good = [f"Good {i},,TRUE,LOW,," for i in range(5)]
    report = imported(client, staff, csv_of(*bad[:120], *good, *bad[120:]))
    assert (report["rows"], report["created"], report["failed"]) == (255, 5, 250)
    assert len(report["errors"]) == 100
    assert [e["line"] for e in report["errors"]] == list(range(2, 102))  # the first 100
    assert count(app, Task) == 5


# --- idempotency and dry runs --------------------------------------------------------------


def test_uploading_again_creates_nothing(
    app: APIFlask, client: FlaskClient, moderator: Account, admin: Account, login: Login
) -> None:
    assert imported(client, login(moderator), SAMPLE) == SAMPLE_REPORT
    again = imported(client, login(admin), BOM + SAMPLE.replace(b"\n", b"\r\n"))
    assert again == {**SAMPLE_REPORT, "created": 0, "skipped_duplicates": 7, "users_created": 0}
    assert count(app, Task) == count(app, TaskAuditEntry) == 7
    assert_sample_imported(app, moderator)  # still the moderator's, nothing by the admin
    # Through the CLI too: the same duplicate key.
    result = app.test_cli_runner().invoke(args=["import-csv", str(SAMPLE_PATH)])
    assert json.loads(result.output[result.output.index("{") :])["skipped_duplicates"] == 7


def test_duplicate_key_is_name_day_and_assignee(
    app: APIFlask, client: FlaskClient, moderator: Account, staff: Headers
) -> None:
    content = csv_of(
        "Weekly Sync,first,TRUE,HIGH,3/31/2025,pat",  # 1: imported
        "  weekly   SYNC ,second,FALSE,LOW,2025-03-31T18:00:00Z,PAT",  # 2: same key
        "Weekly Sync,other day,TRUE,HIGH,4/1/2025,pat",  # 3: another day
        "Weekly Sync,other assignee,TRUE,HIGH,3/31/2025,sam",  # 4: another assignee
        "Weekly Sync,unassigned,TRUE,HIGH,3/31/2025,",  # 5: no assignee
        "Weekly Sync,again unassigned,TRUE,HIGH,3/31/2025,",  # 6: same as 5
    )
    report = imported(client, staff, content)
    assert (report["rows"], report["created"], report["skipped_duplicates"]) == (6, 4, 2)
    with app.app_context():
        descriptions = sorted(str(d) for d in db.session.scalars(select(Task.description)))
        db.session.remove()
    assert descriptions == ["first", "other assignee", "other day", "unassigned"]
    # The task and its audit entry are the first row's, not the duplicate's.
    entries = audit_entries(app)
    assert len(entries) == 4
    first = next(e for e in entries if e.changes["description"]["new"] == "first")
    assert first.changes["status"]["new"] == "active"
    assert first.changes["priority"]["new"] == "HIGH"
    assert first.changes["task_name"]["new"] == "Weekly Sync"
    assert first.actor_id == moderator.id


def test_dry_run_writes_nothing_but_counts_right(
    app: APIFlask, client: FlaskClient, moderator: Account, staff: Headers
) -> None:
    with_duplicate = SAMPLE + b"DATA BACKUP,dup,yes,low,2025-03-31,JOHN_DOE\nBroken,,x,LOW,,\n"
    report = imported(client, staff, with_duplicate, dry_run=True)
    assert {k: v for k, v in report.items() if k != "errors"} == {
        "rows": 9,
        "created": 7,
        "skipped_duplicates": 1,
        "failed": 1,
        "users_created": 6,
        "dry_run": True,
    }
    assert report["errors"] == [{"line": 10, "column": "status", "message": STATUS_ERROR}]
    assert count(app, Task) == count(app, TaskAuditEntry) == 0
    assert set(users_by_name(app)) == {moderator.username}

    real = imported(client, staff, with_duplicate, dry_run=False)
    assert {k: real[k] for k in ("created", "skipped_duplicates", "failed")} == {
        "created": 7,
        "skipped_duplicates": 1,
        "failed": 1,
    }
    # A dry run after the import: everything would be skipped.
    again = imported(client, staff, SAMPLE, dry_run="TRUE")
    assert again == {
        **SAMPLE_REPORT,
        "created": 0,
        "skipped_duplicates": 7,
        "users_created": 0,
        "dry_run": True,
    }
    assert count(app, Task) == 7


# --- roles and the imported accounts -------------------------------------------------------


def test_roles(
    app: APIFlask,
    client: FlaskClient,
    admin: Account,
    moderator: Account,
    alice: Account,
    login: Login,
) -> None:
    assert upload(client, {}, SAMPLE).status_code == 401
    forbidden = upload(client, login(alice), SAMPLE)
    assert forbidden.status_code == 403, forbidden.json
    assert count(app, Task) == 0
    assert imported(client, login(moderator), SAMPLE)["created"] == 7
    second = SAMPLE.replace(b"2025", b"2026")
    assert imported(client, login(admin), second)["created"] == 7
    assert count(app, Task) == 14


def test_imported_accounts_cannot_log_in_until_an_admin_activates_them(
    app: APIFlask, client: FlaskClient, admin: Account, staff: Headers, login: Login
) -> None:
    imported(client, staff, SAMPLE)
    john = users_by_name(app)["john_doe"]
    new_password = "a brand new passphrase"

    def log_in(password: str) -> int:
        body = {"username": "john_doe", "password": password}
        return client.post("/login", json=body).status_code

    assert log_in("") in (401, 422)
    assert log_in(new_password) == 401  # no password at all
    headers = login(admin)
    url = f"/admin/users/{john.id}"
    response = client.patch(url, json={"password": new_password}, headers=headers)
    assert response.status_code == 200, response.json
    assert log_in(new_password) == 403  # a password now, still inactive
    response = client.patch(
        url, json={"is_active": True, "email": "john@example.com"}, headers=headers
    )
    assert response.status_code == 200, response.json
    assert (json_of(response)["is_active"], json_of(response)["email"]) == (
        True,
        "john@example.com",
    )
    assert log_in(new_password) == 200
    assert log_in("wrong password") == 401
    # The others are still locked out.
    assert (
        client.post("/login", json={"username": "jane_smith", "password": new_password}).status_code
        == 401
    )


def test_activation_in_one_request(
    app: APIFlask, client: FlaskClient, admin: Account, staff: Headers, login: Login
) -> None:
    imported(client, staff, SAMPLE)
    emma = users_by_name(app)["emma_watson"]
    body = {"is_active": True, "password": "emma's own passphrase", "email": "emma@example.com"}
    response = client.patch(f"/admin/users/{emma.id}", json=body, headers=login(admin))
    assert response.status_code == 200, response.json
    tokens = client.post(
        "/login", json={"username": "emma_watson", "password": "emma's own passphrase"}
    )
    assert tokens.status_code == 200, tokens.json
    emma_headers = {"Authorization": f"Bearer {json_of(tokens)['access_token']}"}
    mine = json_of(client.get("/tasks", headers=emma_headers))
    assert [t["task_name"] for t in mine["items"]] == ["Error Log Analysis"]


# --- cache invalidation --------------------------------------------------------------------


def test_a_warm_task_list_shows_the_imported_tasks(
    app: APIFlask, make_app: MakeApp, moderator: Account, alice: Account
) -> None:
    fresh = make_app()  # a cache of its own, empty
    client = fresh.test_client()
    staff, alice_headers = login_to(client, moderator), login_to(client, alice)
    for headers in (staff, alice_headers):
        assert client.get("/tasks", headers=headers).headers["X-Cache"] == "MISS"
        warm = client.get("/tasks", headers=headers)
        assert (warm.headers["X-Cache"], json_of(warm)["total"]) == ("HIT", 0)

    imported(client, staff, SAMPLE + b"For Alice,,TRUE,LOW,4/3/2025,alice\n")

    listing = client.get("/tasks", headers=staff)
    assert listing.headers["X-Cache"] == "MISS"
    assert json_of(listing)["total"] == 8
    mine = client.get("/tasks", headers=alice_headers)
    assert mine.headers["X-Cache"] == "MISS"
    assert [t["task_name"] for t in json_of(mine)["items"]] == ["For Alice"]
    assert client.get("/tasks", headers=staff).headers["X-Cache"] == "HIT"

    # A re-upload (nothing created) leaves the cache warm; a dry run too.
    imported(client, staff, SAMPLE)
    imported(client, staff, SAMPLE.replace(b"2025", b"2027"), dry_run=True)
    again = client.get("/tasks", headers=staff)
    assert (again.headers["X-Cache"], json_of(again)["total"]) == ("HIT", 8)


# --- the background-job path (eager) -------------------------------------------------------


def test_a_large_file_becomes_a_job(
    app: APIFlask, make_app: MakeApp, admin: Account, moderator: Account, tmp_path: Path
) -> None:
    uploads = tmp_path / "uploads"
    jobbing = make_app(csv_async_threshold_bytes=100, upload_dir=str(uploads))
    client = jobbing.test_client()
    headers = login_to(client, moderator)

    response = upload(client, headers, SAMPLE)
    assert response.status_code == 202, response.json
    body = json_of(response)
    assert set(body) == {"job_id", "state", "status_url"}
    assert body["state"] == "queued"
    assert body["status_url"] == f"/admin/jobs/{body['job_id']}"
    assert response.headers["Location"].endswith(body["status_url"])

    own = client.get(body["status_url"], headers=headers)  # a moderator follows its own job
    assert own.status_code == 200, own.json
    assert json_of(own)["job_id"] == body["job_id"]
    status = client.get(body["status_url"], headers=login_to(client, admin))
    assert status.status_code == 200, status.json
    job = json_of(status)
    assert (job["kind"], job["state"], job["error"]) == ("csv_import", "succeeded", None)
    assert job["progress"] == {"done": 7, "total": 7}
    assert job["result"] == SAMPLE_REPORT
    assert job["params"] == {"dry_run": False}
    assert job["finished_at"] is not None
    assert_sample_imported(app, moderator)
    assert list(uploads.iterdir()) == []  # the stored upload is removed once imported

    # The same file again: a job that creates nothing.
    again = upload(client, headers, SAMPLE)
    assert again.status_code == 202
    result = json_of(client.get(json_of(again)["status_url"], headers=login_to(client, admin)))
    assert result["state"] == "succeeded"
    assert (result["result"]["created"], result["result"]["skipped_duplicates"]) == (0, 7)


def test_a_large_dry_run_job_writes_nothing(
    app: APIFlask, make_app: MakeApp, admin: Account, tmp_path: Path
) -> None:
    jobbing = make_app(csv_async_threshold_bytes=100, upload_dir=str(tmp_path))
    client = jobbing.test_client()
    headers = login_to(client, admin)
    response = upload(client, headers, SAMPLE, dry_run=True)
    assert response.status_code == 202, response.json
    job = json_of(client.get(json_of(response)["status_url"], headers=headers))
    assert (job["state"], job["params"]) == ("succeeded", {"dry_run": True})
    assert job["progress"] == {"done": 7, "total": 7}
    assert job["result"] == {**SAMPLE_REPORT, "dry_run": True}
    assert count(app, Task) == 0
    assert set(users_by_name(app)) == {admin.username}


def test_a_large_file_with_a_bad_header_is_422_at_once(
    app: APIFlask, make_app: MakeApp, admin: Account, tmp_path: Path
) -> None:
    jobbing = make_app(csv_async_threshold_bytes=100, upload_dir=str(tmp_path))
    client = jobbing.test_client()
    headers = login_to(client, admin)
    bad = "task_name,status,priority,owner\n" + "x,TRUE,LOW,me\n" * 20
    response = upload(client, headers, bad)
    assert response.status_code == 422, response.json
    assert json_of(response)["errors"] == {"file": {"unknown_columns": ["owner"]}}
    not_utf8 = upload(client, headers, b"\xff\xfe" + "task_name\n".encode("utf-16-le") * 20)
    assert not_utf8.status_code == 400, not_utf8.json
    assert count(app, Job) == count(app, Task) == 0
    assert list(tmp_path.iterdir()) == []
