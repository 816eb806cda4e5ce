"""A Python client generated from `GET /openapi.json` (openapi-python-client) works: generated
without a warning, it registers, logs in, creates, lists, updates, reads the history of and
deletes a task against the app served over HTTP, each answer parsed into its documented model."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from tests.conftest import Account
from tests.live_server import serving

PACKAGE = "task_api_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
# No formatting of the output (the generator runs ruff on it by default): its code is not ours.
GENERATOR_CONFIG = {"post_hooks": []}
WARNING_WORDS = ("Warning", "Unable", "Could not", "Failure", "Skipping")

Login = Callable[[Account], dict[str, str]]


@pytest.fixture
def generated(client: FlaskClient, tmp_path: Path) -> Iterator[Callable[[str], ModuleType]]:
    """The client generated from the app's document; `load("api.tasks.create_task")` imports
    one of its modules."""
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(client.get("/openapi.json").json))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(GENERATOR_CONFIG))
    completed = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(spec), "--output-path",
         str(tmp_path / PACKAGE), "--meta", "none", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert not [word for word in WARNING_WORDS if word in output], output
    sys.path.insert(0, str(tmp_path))
    try:
        yield lambda name: importlib.import_module(f"{PACKAGE}.{name}")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_the_generated_client_goes_through_a_tasks_life(
    app: APIFlask, generated: Callable[[str], ModuleType], admin: Account, login: Login
) -> None:
    api = generated("api")
    models = generated("models")
    client_module = generated("client")
    for name in ("auth", "admin", "tasks"):
        generated(f"api.{name}")
    register, login_op = generated("api.auth.register"), generated("api.auth.login")
    update_user = generated("api.admin.update_user")
    create_task, list_tasks = generated("api.tasks.create_task"), generated("api.tasks.list_tasks")
    get_task, update_task = generated("api.tasks.get_task"), generated("api.tasks.update_task")
    task_history = generated("api.tasks.task_history")
    delete_task = generated("api.tasks.delete_task")
    assert api is not None
    admin_token = login(admin)["Authorization"].removeprefix("Bearer ")

    with serving(app) as base_url:
        anonymous = client_module.Client(base_url=base_url, raise_on_unexpected_status=True)
        account = register.sync(
            client=anonymous,
            body=models.RegisterIn(
                username="Generated", email="generated@example.com", password="a long passphrase"
            ),
        )
        assert isinstance(account, models.UserOut), account
        assert (account.username, account.role) == ("generated", models.Role.USER)

        # Deleting takes a moderator: the admin promotes the new account.
        as_admin = client_module.AuthenticatedClient(
            base_url=base_url, token=admin_token, raise_on_unexpected_status=True
        )
        promoted = update_user.sync(
            account.id, client=as_admin, body=models.AdminUserPatchIn(role=models.Role.MODERATOR)
        )
        assert isinstance(promoted, models.UserOut) and promoted.role == models.Role.MODERATOR

        tokens = login_op.sync(
            client=anonymous,
            body=models.LoginIn(username="generated", password="a long passphrase"),
        )
        assert isinstance(tokens, models.TokenPairOut), tokens
        me = client_module.AuthenticatedClient(
            base_url=base_url, token=tokens.access_token, raise_on_unexpected_status=True
        )

        task = create_task.sync(
            client=me,
            body=models.TaskCreateIn(
                task_name="From a generated client",
                priority=models.TaskPriority.HIGH,
                assigned_user_id=account.id,
            ),
        )
        assert isinstance(task, models.TaskOut), task
        assert task.created_by_id == account.id

        page = list_tasks.sync(client=me)
        assert isinstance(page, models.TaskPage), page
        assert [item.id for item in page.items] == [task.id]
        cursor_page = list_tasks.sync(client=me, limit=5)
        assert isinstance(cursor_page, models.TaskCursorPage), cursor_page
        assert cursor_page.next_cursor is None

        updated = update_task.sync(
            task.id,
            client=me,
            body=models.TaskUpdateIn(status=models.TaskStatus.INACTIVE, description="done"),
        )
        assert isinstance(updated, models.TaskOut), updated
        assert (updated.status, updated.description) == (models.TaskStatus.INACTIVE, "done")

        history = task_history.sync(task.id, client=me)
        assert isinstance(history, models.AuditPage), history
        assert [entry.action.value for entry in history.items] == ["updated", "created"]

        deleted = delete_task.sync_detailed(task.id, client=me)
        assert deleted.status_code == 204
        seen_by_admin = get_task.sync(task.id, client=as_admin)  # only admins see deleted tasks
        assert isinstance(seen_by_admin, models.TaskOut) and seen_by_admin.deleted_at is not None

        # Errors parse into the documented error model, whatever the operation.
        missing = get_task.sync(task.id, client=me)
        assert isinstance(missing, models.HTTPError), missing
        assert (missing.code, missing.description) == (404, "task not found")
        invalid = create_task.sync(client=me, body=models.TaskCreateIn(task_name=" "))
        assert isinstance(invalid, models.ValidationError), invalid
        assert "task_name" in invalid.errors.additional_properties["json"]


def test_generated_operations_are_named_by_the_views(
    generated: Callable[[str], ModuleType],
) -> None:
    # operationIds: `api.tasks.create_task`, not the path's `post_task`.
    for name in ("tasks.create_task", "tasks.task_history", "jobs.get_job", "auth.refresh"):
        module: Any = generated(f"api.{name}")
        assert callable(module.sync_detailed), name
