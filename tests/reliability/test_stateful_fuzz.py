"""The whole API against its own OpenAPI document, as `schemathesis run` tests it: the examples,
coverage, fuzzing and stateful phases and every check, as an admin and as a user.

tests/reliability/test_fuzz_openapi.py fuzzes each operation alone with a fixed number of
examples per role. This runs schemathesis's own engine over the whole document, against the app
served over HTTP, and reads its report as its command line does: boundary values (coverage),
undocumented statuses and methods, schema-valid data refused (positive_data_acceptance), invalid
data accepted (negative_data_rejection), and the stateful phase following the document's links
from a created task, account or job to the operations on it. Any failure fails the test, and so
does any warning: they mean operations went untested (every answer 401/403, every answer 404,
mostly 429) or accepted nothing. Error answers must name no class or library, and no request
may end in an unhandled exception. The figures (cases, operations, failures, seconds) are
printed with schemathesis's report (`pytest -s` shows them).

The run keeps its session whatever it fuzzes:
- Its bearer token is put on each request by an auth provider. After an operation that can end
  the session or change the account (`POST /logout`, `PATCH /me`, `PATCH /admin/users/{id}`)
  or a 401 to the token, the account is put back as seeded and logged in again through the
  service (not `POST /login`, so no rate limit counts it).
- Each request comes from another client address, as from a crowd: the per-address limits of
  `POST /login` and `POST /register` would otherwise be spent in seconds and answer 429 for the
  rest of the run. The per-username limits apply. The per-caller limit (RATELIMIT_DEFAULT) is
  off and `PATCH /me`'s per-user one raised: one fuzzer sends more than one client would.
- As a user, the operations a user may not call (admin and moderator ones, and soft deletion)
  are left out: they could only be refused, which the admin run and the API tests cover.

What the document cannot state is given to schemathesis, not left for it to guess wrong: CSV
files for the upload's binary `file` (`csv_files`); in positive cases, an assignee that exists,
an `Idempotency-Key` used once, and `GET /tasks`'s parameters kept consistent (one way of
paging, ranges in order, each sort field once, no made-up cursor) (`repair_positive_case`).
Two of its readings are corrected (`FuzzRun.filter_failure`), and use_after_free is off: a
soft-deleted task stays readable to admins by design.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
import schemathesis
from apiflask import APIFlask
from hypothesis import strategies as st
from schemathesis.cli.commands.run.context import ExecutionContext
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.parameters import ParameterLocation
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from schemathesis.openapi.checks import EnsureResourceAvailability
from schemathesis.specs.openapi.formats import unregister_string_format

from app.extensions import db
from app.models import Role, User, enums
from app.models.types import MAX_ID
from app.schemas import common, csv_import, task_logs, tasks, users
from app.services import sessions
from app.services.context import passwords
from tests.conftest import TEST_PASSWORD, Account, MakeApp
from tests.live_server import serving
from tests.reliability.schemathesis_helpers import distinct_clients, run_engine

MAX_EXAMPLES = 40
MAX_STEPS = 40
# Operations after which the acting session or account may be gone or changed.
ACCOUNT_CHANGING = frozenset({"POST /logout", "PATCH /me", "PATCH /admin/users/{user_id}"})
NUMBERED_PAGING = ("page", "per_page")
RANGES = (("created_from", "created_to"), ("due_from", "due_to"))
QUERY = ParameterLocation.QUERY
# PATCH /me's per-user limit, raised: the fuzzer is one user (by design, see the module doc).
PROFILE_LIMIT = "6000/minute"
UPLOAD = "POST /upload-csv"
# What pydantic reads as a boolean from text (a multipart field).
BOOLEAN_WORDS = frozenset({"0", "1", "true", "false", "yes", "no", "on", "off", "t", "f", "y", "n"})


def fuzz_config(base_url: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "base-url": base_url,
            "seed": 1,
            # The Authorization header is the auth provider's (the session's own token), not
            # generated: ignored_auth probes requests without it and with a wrong one.
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "with-security-parameters": False,
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": MAX_STEPS},
            },
            # use_after_free expects 404 after a DELETE: `DELETE /task/{id}` is a soft delete, and
            # the task stays readable by admins (to restore or purge it) by design.
            "checks": {"enabled": True, "use_after_free": {"enabled": False}},
            "workers": 1,
        }
    )


@dataclass
class Session:
    """The acting account's token, renewed after anything that may have ended its session."""

    app: APIFlask
    actor: Account
    password_hash: str
    token: str | None = None
    logins: int = 0

    def current(self) -> str:
        if self.token is None:
            self.token = self._log_in_afresh()
        return self.token

    def _log_in_afresh(self) -> str:
        with self.app.app_context():
            user = db.session.get(User, self.actor.id)
            assert user is not None
            user.role = self.actor.role
            user.is_active = True
            user.email = f"{self.actor.username}@example.com"
            user.password_hash = self.password_hash
            db.session.commit()
            pair = sessions.login(self.actor.username, TEST_PASSWORD)
        self.logins += 1
        return str(pair.access_token)

    def after(self, label: str, authorization: str | None, status: int) -> None:
        if label in ACCOUNT_CHANGING or (status == 401 and authorization == f"Bearer {self.token}"):
            self.token = None


def _is_positive(case: Any, location: ParameterLocation) -> bool:
    meta = getattr(case, "meta", None)
    return meta is None or not meta.is_negative_at(location)


def _an_id(value: Any) -> bool:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    return number is not None and number == int(number) and 1 <= number <= MAX_ID


def _dates(query: dict[str, Any], names: tuple[str, str]) -> tuple[date, date] | None:
    try:
        return date.fromisoformat(str(query[names[0]])), date.fromisoformat(str(query[names[1]]))
    except (KeyError, ValueError):
        return None


def _repair_task_list_query(query: dict[str, Any]) -> None:
    query.pop("cursor", None)  # opaque: only the API's own are valid
    if any(name in query for name in NUMBERED_PAGING):
        query.pop("limit", None)
    for names in RANGES:
        bounds = _dates(query, names)
        if bounds is not None and bounds[0] > bounds[1]:
            query[names[0]], query[names[1]] = query[names[1]], query[names[0]]
    if isinstance(query.get("sort"), str):
        terms: dict[str, str] = {}
        for term in query["sort"].split(","):
            terms.setdefault(term.strip(" \t").lstrip("-"), term)
        query["sort"] = ",".join(terms.values())


def repair_positive_case(case: Any, actor: Account) -> None:
    """What the document cannot state, made to hold in the positive parts of a case (see the
    module doc); parts generated invalid on purpose are left as they are."""
    label = case.operation.label
    headers = case.headers or {}
    if _is_positive(case, ParameterLocation.HEADER) and "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = str(uuid.uuid4())
    body = case.body
    assignee = body.get("assigned_user_id") if isinstance(body, dict) else None
    writes_task = label in ("POST /task", "PUT /task/{task_id}")
    if writes_task and _an_id(assignee) and _is_positive(case, ParameterLocation.BODY):
        body["assigned_user_id"] = actor.id
    query = case.query
    if label == "GET /tasks" and isinstance(query, dict) and _is_positive(case, QUERY):
        _repair_task_list_query(query)


def _internal_names() -> re.Pattern[str]:
    """Names of the app's classes and libraries, which no error message may show a client."""
    names = {"pydantic", "werkzeug", "sqlalchemy", "psycopg", "Traceback"}
    for module in (common, csv_import, task_logs, tasks, users, enums):
        names |= {
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and value.__module__ == module.__name__
        }
    names -= {"Role"}  # a plain word too: "role" is a field, and messages may say it
    return re.compile(r"\b(" + "|".join(sorted(names)) + r")\b")


class ServerErrors(logging.Handler):
    """The app's unhandled exceptions (logged by app.api.errors), with their tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(logging.Formatter().format(record))


def csv_files() -> st.SearchStrategy[bytes]:
    """CSV files the import reads (its header, rows of any content, valid or not): what the
    upload's `format: binary` cannot state, for the `file` field (the only binary one)."""
    cell = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=20)
    status = st.sampled_from(["TRUE", "false", "yes", "0", "maybe"])
    priority = st.sampled_from(["LOW", "medium", "High", "CRITICAL", "urgent"])
    rows = st.lists(st.tuples(cell, status, priority, cell), min_size=1, max_size=4)

    def render(values: list[tuple[str, ...]]) -> bytes:
        text = io.StringIO()
        csv.writer(text).writerows([("task_name", "status", "priority", "description"), *values])
        return text.getvalue().encode()

    return rows.map(render)


@dataclass
class FuzzRun:
    """One run's session, hooks and findings besides schemathesis's own."""

    session: Session
    internal_names: re.Pattern[str] = field(default_factory=_internal_names)
    purged: set[int] = field(default_factory=set)
    leaks: list[str] = field(default_factory=list)
    server_errors: ServerErrors = field(default_factory=ServerErrors)
    seconds: float = 0.0

    def before_call(self, ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
        repair_positive_case(case, self.session.actor)

    def after_call(self, ctx: Any, case: Any, response: Any) -> None:
        label = case.operation.label
        sent = response.request.headers.get("Authorization")
        self.session.after(label, sent, response.status_code)
        if label == "DELETE /admin/tasks/{task_id}" and response.status_code == 204:
            self.purged.add(int(case.path_parameters["task_id"]))
        if response.status_code >= 400:
            found = self.internal_names.search(response.text or "")
            if found:
                self.leaks.append(f"{label} names {found.group(0)}: {response.text}")

    def filter_failure(self, ctx: Any, failure: Any, case: Any, response: Any) -> bool:
        """Failures that are schemathesis's misreading, not the API's:
        - a task purged (`DELETE /admin/tasks/{id}`) is gone from `/task/{id}` too, but only a
          DELETE on the resource's own path counts as its removal;
        - a multipart field is text: `dry_run` sent as the number 0 or 1 arrives as "0" or "1",
          which the upload reads as a boolean, as it does "true" or "no"."""
        task_id = str((case.path_parameters or {}).get("task_id", ""))
        if isinstance(failure, EnsureResourceAvailability):
            return not (task_id.isdigit() and int(task_id) in self.purged)
        if isinstance(failure, AcceptedNegativeData) and case.operation.label == UPLOAD:
            dry_run = case.body.get("dry_run") if isinstance(case.body, dict) else None
            return str(dry_run).lower() not in BOOLEAN_WORDS
        return True


# Refused to users by the service rather than by a role in the document: `DELETE /task/{id}`
# answers a user 403 on its own tasks and 404 on others' (whose existence it does not tell).
REFUSED_BY_THE_SERVICE = {Role.USER: ["delete_task"]}


def refused_to(raw_schema: dict[str, Any], role: Role) -> list[str]:
    """The operations `role` may not call at all (their security names other roles)."""
    return REFUSED_BY_THE_SERVICE.get(role, []) + [
        operation["operationId"]
        for item in raw_schema["paths"].values()
        for operation in item.values()
        if any(
            scopes and role.value not in scopes
            for requirement in operation.get("security", [])
            for scopes in requirement.values()
        )
    ]


def seed(app: APIFlask, session: Session, admin: Session) -> None:
    """Tasks of the acting account's and the daily log of today, so that log entries exist for
    it to read (only an admin can start the log)."""
    client = app.test_client()
    for name in ("seeded", "seeded too"):
        created = client.post(
            "/task",
            json={"task_name": name, "assigned_user_id": session.actor.id},
            headers={"Authorization": f"Bearer {session.current()}"},
        )
        assert created.status_code == 201, created.json
    logged = client.post(
        "/admin/jobs/daily-log", json={}, headers={"Authorization": f"Bearer {admin.current()}"}
    )
    assert logged.status_code == 202, logged.json


def run_schemathesis(app: APIFlask, session: Session) -> tuple[ExecutionContext, FuzzRun]:
    run = FuzzRun(session)
    hooks = (run.before_call, run.after_call)
    errors_log = logging.getLogger("app.api.errors")
    errors_log.addHandler(run.server_errors)
    # Process-wide registrations (before_call and after_call have no other scope), undone after.
    schemathesis.openapi.format("binary", csv_files())
    for hook in hooks:
        GLOBAL_HOOK_DISPATCHER.register_hook_with_name(hook, hook.__name__)
    started = time.monotonic()
    try:
        with serving(distinct_clients(app)) as base_url:
            schema = schemathesis.openapi.from_url(
                f"{base_url}/openapi.json", config=fuzz_config(base_url)
            )
            # A role's refusal (403) of these is the admin run's and test_openapi's to check:
            # run as that role, they would be nothing but 403 (schemathesis: "missing auth").
            schema = schema.exclude(operation_id=refused_to(schema.raw_schema, session.actor.role))

            class Bearer:
                def get(self, case: Any, ctx: Any) -> str:
                    return session.current()

                def set(self, case: Any, data: str, ctx: Any) -> None:
                    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

            schema.auth(refresh_interval=None)(Bearer)
            schema.hooks.register_hook_with_name(run.filter_failure, "filter_failure")
            ctx = run_engine(schema)
    finally:
        for hook in hooks:
            GLOBAL_HOOK_DISPATCHER.unregister(hook)
        unregister_string_format("binary")
        errors_log.removeHandler(run.server_errors)
    run.seconds = time.monotonic() - started
    return ctx, run


@pytest.mark.parametrize("role", [Role.ADMIN, Role.USER], ids=str)
def test_schemathesis_finds_nothing(
    make_app: MakeApp,
    backend: str,
    make_user: Callable[..., Account],
    role: Role,
) -> None:
    if backend == "sqlite":
        pytest.skip("one database is enough for the contract; PostgreSQL is production's")
    fuzzed = make_app(ratelimit_enabled=True, ratelimit_default="", ratelimit_profile=PROFILE_LIMIT)
    actor = make_user("fuzz_admin" if role == Role.ADMIN else "fuzz_user", role)
    with fuzzed.app_context():
        seeded_password = passwords().hash(TEST_PASSWORD)
    session = Session(fuzzed, actor, seeded_password)
    seed(fuzzed, session, Session(fuzzed, make_user("seed_admin", Role.ADMIN), seeded_password))

    ctx, run = run_schemathesis(fuzzed, session)

    summary = ctx.summary()
    operations = summary.operations
    assert operations is not None
    failures = sum(group.count for group in summary.failures)
    print(
        f"\n{role}: {summary.test_cases.generated} cases, {operations.tested}/"
        f"{operations.selected} operations tested (of {operations.total}), {failures} failures "
        f"({summary.filtered} filtered, see FuzzRun.filter_failure), {run.seconds:.0f} s, "
        f"{session.logins} logins of the fuzzer's own"
    )
    assert not run.server_errors.records, "\n".join(run.server_errors.records)
    assert not summary.failures, [(g.code, g.title, g.operations) for g in summary.failures]
    assert not summary.errors, summary.errors
    assert summary.warnings.is_empty, summary.warnings.as_labels()
    assert not run.leaks, "\n".join(run.leaks)
    assert operations.tested == operations.selected
