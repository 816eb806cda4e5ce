"""app.schemas.column_json: task bodies encoded from column values are the output models' JSON
byte for byte (through the app's JSON provider), for every type of value a column gives; objects
and debug mode's indentation are left to the models; and the hot path's misses use it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import Client

from app.api import tasks as task_views
from app.api.json_provider import json_answer
from app.cache.invalidation import STAFF_SCOPE
from app.cache.store import date_generation, scope_generation, task_generation
from app.models import TaskPriority, TaskStatus
from app.schemas.column_json import task_json, task_page_json
from app.schemas.tasks import TaskOut, TaskPage
from app.services import loader
from tests.api.conftest import hot_paths_of
from tests.conftest import Account

Login = Callable[[Account], dict[str, str]]
DAY = date(2031, 3, 4)

# Every kind of value the columns give: text with escapes and every plane, no microseconds and
# some, a non-UTC offset and a naive datetime (what the models would see from another driver).
TEXTS = [
    "plain",
    "".join(chr(c) for c in range(0x20)) + '"\\/\x7f\u2028\u2029\ufeff',
    "ünïcødé ✓ \U0001f600 \u4e2d\u6587",
    "",
]
MOMENTS = [
    datetime(2026, 11, 22, 0, 5, tzinfo=UTC),
    datetime(2026, 11, 22, 0, 5, 1, 120, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    datetime(2026, 1, 2, 3, 4, 5),
]


def task_values(n: int) -> dict[str, Any]:
    moment = MOMENTS[n % len(MOMENTS)]
    return {
        "id": 2**31 - 1 - n,
        "task_name": TEXTS[n % len(TEXTS)] or "x",
        "description": None if n % 2 else TEXTS[(n + 1) % len(TEXTS)],
        "status": list(TaskStatus)[n % len(TaskStatus)],
        "priority": list(TaskPriority)[n % len(TaskPriority)],
        "assigned_user_id": None if n % 3 == 0 else n,
        "created_by_id": n + 1,
        "created_at": moment,
        "updated_at": MOMENTS[(n + 1) % len(MOMENTS)],
        "deleted_at": None if n % 2 else moment,
        "due_date": None if n % 4 == 0 else date(2026, 1, 1) + timedelta(days=n),
        "version": n + 1,  # columns beyond the model's are left out
        "import_key": "k" * n,
    }


def snapshot_values(n: int) -> dict[str, Any]:
    return {
        "log_id": n,
        "log_date": date(2026, 11, 22),
        "status": list(TaskStatus)[(n + 1) % len(TaskStatus)],
        "priority": list(TaskPriority)[(n + 2) % len(TaskPriority)],
        "assigned_user_id": None if n % 2 else n + 7,
        "logged_at": MOMENTS[n % len(MOMENTS)],
    }


def provider_json(app: APIFlask, data: Any) -> bytes:
    with app.app_context():
        return json_answer(app, data, {})[1]


def test_a_task_is_its_models_json(app: APIFlask) -> None:
    for n in range(24):
        values = task_values(n)
        by_model = TaskOut.model_validate(values).model_dump(mode="json", by_alias=True)
        assert provider_json(app, task_json(values)) == provider_json(app, by_model), n


@pytest.mark.parametrize("with_snapshots", [False, True])
def test_a_page_is_its_models_json(app: APIFlask, with_snapshots: bool) -> None:
    for size in (0, 1, 20):
        items = [task_values(n) for n in range(size)]
        if with_snapshots:
            items = [{**item, "log": snapshot_values(n)} for n, item in enumerate(items)]
        body = {"items": items, "page": 3, "per_page": 20, "total": 2**40, "pages": 7}
        by_model = TaskPage.model_validate(body).model_dump(mode="json", by_alias=True)
        encoded = task_page_json(body)
        assert encoded is not None
        assert provider_json(app, encoded) == provider_json(app, by_model), size


def test_objects_and_values_orjson_cannot_write_are_left_to_the_model() -> None:
    class Row:
        pass

    body = {"items": [task_values(0), Row()], "page": 1, "per_page": 20, "total": 2, "pages": 1}
    assert task_page_json(body) is None
    body["items"] = [{**task_values(0), "log": Row()}]
    assert task_page_json(body) is None
    assert task_json({**task_values(0), "id": 2**64}) is None  # beyond orjson's integers


@pytest.fixture
def logged_day(app: APIFlask, client: FlaskClient, admin: Account, login: Login) -> int:
    """A task with every field set, logged on DAY; its id."""
    headers = login(admin)
    escapes = TEXTS[1].replace("\x00", "")  # text columns cannot hold NUL (422)
    fields = {"task_name": TEXTS[2], "description": escapes, "due_date": "2031-03-09"}
    created = client.post("/task", json={**fields, "assigned_user_id": admin.id}, headers=headers)
    assert created.status_code == 201
    with app.app_context():
        loader.run_inline(DAY, "test")
    task: dict[str, Any] = created.get_json()
    return int(task["id"])


@pytest.mark.parametrize("debug", [False, True], ids=["compact", "debug-indented"])
def test_the_hot_paths_misses_answer_what_flask_does_encoded_from_columns(
    app: APIFlask,
    client: FlaskClient,
    admin: Account,
    login: Login,
    logged_day: int,
    flask_dispatches: list[str],
    monkeypatch: pytest.MonkeyPatch,
    debug: bool,
) -> None:
    """In compact mode the answers are encoded from the columns (the encoder answers, not the
    models); in debug mode (indented answers) by the models. Both equal Flask's answers."""
    encoded: list[bool] = []
    for name in ("task_json", "task_page_json"):
        original = getattr(task_views, name)

        def spy(values: Any, original: Any = original) -> Any:
            result = original(values)
            encoded.append(result is not None)
            return result

        monkeypatch.setattr(task_views, name, spy)
    headers = login(admin)
    client.get("/tasks", headers=headers)  # the session is remembered from here on
    app.debug = debug
    cache = app.extensions["response_cache"]
    stale = [scope_generation(STAFF_SCOPE), date_generation(DAY.isoformat())]
    stale.append(task_generation(logged_day))
    flask_app = Client(hot_paths_of(app).next_app)

    for path in [f"/task/{logged_day}", "/tasks?per_page=5", f"/tasks?date={DAY.isoformat()}"]:
        cache.bump(stale)
        through_flask = flask_app.get(path, headers=headers)
        cache.bump(stale)
        flask_dispatches.clear()
        encoded.clear()
        answer = client.get(path, headers=headers)

        assert answer.status_code == through_flask.status_code == 200, path
        assert flask_dispatches == [] and answer.headers["X-Cache"] == "MISS", path
        assert answer.get_data() == through_flask.get_data(), path
        assert answer.headers["ETag"] == through_flask.headers["ETag"], path
        assert encoded == ([] if debug else [True]), path
        assert orjson.loads(answer.get_data())  # a body with content
    body = client.get(f"/tasks?date={DAY.isoformat()}", headers=headers).get_data()
    assert (b'\n  "' in body) == debug
