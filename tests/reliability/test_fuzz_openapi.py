"""Property-based fuzzing of every operation of the app's own OpenAPI document (schemathesis).

For each role (admin, moderator, user) and each operation in `GET /openapi.json`, schemathesis
generates requests from the documented parameters and bodies, valid ones and invalid ones
(negative mode: wrong types, malformed JSON, out-of-range values), sends them to the Flask app
through WSGI and checks every answer: no 5xx, a documented status code, the documented content
type, a body matching the documented schema and the documented response headers.

Path parameters are sometimes drawn from ids that exist (seeded tasks, daily-log entries, a job,
the accounts), so the fuzzing reaches past the 404s. Before each operation the acting account is
put back as it was (an operation may have changed its role, email, password or active flag, or
logged it out) and logged in afresh. Bounded: a fixed number of examples per operation,
derandomized, so a run is repeatable and takes seconds per role and backend.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from apiflask import APIFlask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.extensions import db
from app.models import Job, Role, TaskLogEntry, User
from app.services.context import passwords
from tests.conftest import TEST_PASSWORD, Account

MAX_EXAMPLES = 25  # per operation, generation mode and role
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)
PATH_PARAMETER = re.compile(r"{(\w+)}")
# Operations that remove the seeded tasks from view run last, the purge after the restore.
RUN_LAST = {"DELETE /task/{task_id}": 1, "POST /task/{task_id}/restore": 2}
RUN_LAST["DELETE /admin/tasks/{task_id}"] = 3
VALID_CSV = b"task_name,status,priority,description\nfuzzed import,TRUE,low,from a file\n"


@dataclass
class ExistingIds:
    """Ids that exist in the seeded database, per path-parameter name."""

    by_name: dict[str, list[Any]] = field(default_factory=dict)


def _seed(
    app: APIFlask,
    client: FlaskClient,
    login: Callable[[Account], dict[str, str]],
    accounts: dict[str, Account],
) -> ExistingIds:
    admin_headers = login(accounts["admin"])
    alice_headers = login(accounts["user"])
    task_ids = []
    for name, assignee, headers in [
        ("admin's, for alice", accounts["user"].id, admin_headers),
        ("admin's, unassigned", None, admin_headers),
        ("admin's, for bob", accounts["bob"].id, admin_headers),
        ("alice's own", accounts["user"].id, alice_headers),
    ]:
        response = client.post(
            "/task",
            json={"task_name": name, "priority": "high", "assigned_user_id": assignee},
            headers=headers,
        )
        assert response.status_code == 201, response.get_json()
        task_ids.append(response.get_json()["id"])
    # The daily log (run in-process) snapshots the tasks: log ids and a job id exist.
    response = client.post("/admin/jobs/daily-log", json={}, headers=admin_headers)
    assert response.status_code == 202, response.json
    with app.app_context():
        log_ids = list(db.session.scalars(db.select(TaskLogEntry.id)))
        job_ids = list(db.session.scalars(db.select(Job.id)))
    assert log_ids and job_ids
    return ExistingIds(
        {
            "task_id": task_ids,
            "log_id": log_ids,
            "job_id": job_ids,
            # Not the acting admin's own id: the fuzzing would demote or deactivate it.
            "user_id": [accounts["bob"].id, accounts["moderator"].id],
        }
    )


def _fresh_session(
    app: APIFlask,
    login: Callable[[Account], dict[str, str]],
    actor: Account,
) -> dict[str, str]:
    """Put the acting account back as seeded, and log it in."""
    with app.app_context():
        user = db.session.get(User, actor.id)
        assert user is not None
        user.role = actor.role
        user.is_active = True
        user.email = f"{actor.username}@example.com"
        user.password_hash = passwords().hash(TEST_PASSWORD)
        db.session.commit()
    return login(actor)


def _strategy(operation: Any, ids: ExistingIds) -> Any:
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    names = PATH_PARAMETER.findall(operation.path)
    if names and all(name in ids.by_name for name in names):
        existing = st.fixed_dictionaries(
            {name: st.sampled_from(ids.by_name[name]) for name in names}
        )
        strategies.append(
            existing.flatmap(lambda path: operation.as_strategy(path_parameters=path))
        )
    if operation.label == "POST /upload-csv":  # random bytes are rarely a CSV: one that is
        strategies.append(
            st.booleans().flatmap(
                lambda dry_run: operation.as_strategy(
                    body={"file": VALID_CSV, "dry_run": dry_run}, media_type="multipart/form-data"
                )
            )
        )
    has_inputs = any(
        len(part)
        for part in (operation.path_parameters, operation.query, operation.headers, operation.body)
    )
    if has_inputs:  # an operation with no inputs has nothing to make invalid
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(strategies)


def _fuzz(operation: Any, headers: dict[str, str], ids: ExistingIds) -> None:
    @FUZZ_SETTINGS
    @given(case=_strategy(operation, ids))
    def run(case: Any) -> None:
        case.headers = {**(case.headers or {}), **headers}
        case.call_and_validate(checks=CHECKS)

    run()


@pytest.mark.parametrize("role", [Role.ADMIN, Role.MODERATOR, Role.USER], ids=str)
def test_every_operation_conforms_to_its_documentation(
    app: APIFlask,
    client: FlaskClient,
    login: Callable[[Account], dict[str, str]],
    admin: Account,
    moderator: Account,
    alice: Account,
    bob: Account,
    role: Role,
) -> None:
    accounts = {"admin": admin, "moderator": moderator, "user": alice, "bob": bob}
    ids = _seed(app, client, login, accounts)
    actor = {Role.ADMIN: admin, Role.MODERATOR: moderator, Role.USER: alice}[role]
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    failures: dict[str, str] = {}
    results = list(schema.get_all_operations())
    unreadable = [result.err() for result in results if isinstance(result, Err)]
    assert not unreadable, unreadable
    operations = sorted(
        (result.ok() for result in results if isinstance(result, Ok)),
        key=lambda operation: RUN_LAST.get(operation.label, 0),
    )
    assert len(operations) > 20
    for operation in operations:
        headers = _fresh_session(app, login, actor)
        try:
            _fuzz(operation, headers, ids)
        except Exception as exc:  # collect every operation's failure, not only the first
            failures[operation.label] = str(exc)
    assert not failures, "\n\n".join(f"## {label}\n{text}" for label, text in failures.items())
