"""Every failure answers with one JSON shape, `{code, message, description, errors?}`, and every
response carries the security headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import create_app
from app.extensions import db
from tests.conftest import Account
from tests.conftest import test_settings as settings_for

Login = Callable[[Account], dict[str, str]]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ONE_MIB = 1024 * 1024


def assert_error_shape(response: TestResponse, status: int) -> dict[str, Any]:
    """The response is the documented error body for `status`, and nothing else."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    assert set(body) <= {"code", "message", "description", "errors"}
    assert {"code", "message", "description"} <= set(body)
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["description"], str) and body["description"]
    if "errors" in body:
        assert isinstance(body["errors"], dict) and body["errors"]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    return body


@pytest.fixture
def alice_headers(alice: Account, login: Login) -> dict[str, str]:
    return login(alice)


# --- 400 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["{bad", '{"task_name": "x",}', "", "\xff", "[1, 2"])
def test_malformed_json_is_400(
    client: FlaskClient, alice_headers: dict[str, str], payload: str
) -> None:
    response = client.post(
        "/task", data=payload, content_type="application/json", headers=alice_headers
    )

    body = assert_error_shape(response, 400)
    assert body["message"] == "Bad Request"
    assert "JSON" in body["description"]


def test_malformed_json_is_400_on_an_anonymous_endpoint(client: FlaskClient) -> None:
    response = client.post("/login", data="{", content_type="application/json")

    assert_error_shape(response, 400)


@pytest.mark.parametrize(
    "payload", ["[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000]
)
def test_deeply_nested_json_is_400_not_500(
    client: FlaskClient, alice_headers: dict[str, str], payload: str
) -> None:
    response = client.post(
        "/task", data=payload, content_type="application/json", headers=alice_headers
    )

    body = assert_error_shape(response, 400)
    assert "Traceback" not in body["description"]


# --- 401 / 403 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."},
    ],
)
def test_missing_or_bad_credentials_are_401_with_a_bearer_challenge(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.get("/tasks", headers=headers)

    body = assert_error_shape(response, 401)
    assert body["message"] == "Unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_password_is_401(client: FlaskClient, alice: Account) -> None:
    response = client.post("/login", json={"username": "alice", "password": "wrong password"})

    assert_error_shape(response, 401)


def test_forbidden_role_is_403(client: FlaskClient, alice_headers: dict[str, str]) -> None:
    response = client.get("/admin/dashboard", headers=alice_headers)

    body = assert_error_shape(response, 403)
    assert body["message"] == "Forbidden"


# --- 404 / 405 / 409 ------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/no/such/thing", "/task/abc", "/tasks/1/nope", "/admin"])
def test_unknown_url_is_404(client: FlaskClient, url: str) -> None:
    body = assert_error_shape(client.get(url), 404)

    assert body["message"] == "Not Found"


def test_unknown_resource_is_404(client: FlaskClient, alice_headers: dict[str, str]) -> None:
    assert_error_shape(client.get("/task/424242", headers=alice_headers), 404)


@pytest.mark.parametrize(
    ("method", "url"),
    [("delete", "/tasks"), ("put", "/register"), ("post", "/health"), ("get", "/login")],
)
def test_wrong_method_is_405_with_allow_header(client: FlaskClient, method: str, url: str) -> None:
    response = getattr(client, method)(url)

    body = assert_error_shape(response, 405)
    assert body["message"] == "Method Not Allowed"
    assert "Allow" in response.headers
    assert method.upper() not in response.headers["Allow"]


def test_conflict_is_409_with_per_field_errors(client: FlaskClient, alice: Account) -> None:
    response = client.post(
        "/register",
        json={"username": "alice", "email": "alice@example.com", "password": "long enough pw"},
    )

    body = assert_error_shape(response, 409)
    assert body["message"] == "Conflict"
    # Only the username: whether an email address has an account is never told (#23).
    assert set(body["errors"]["json"]) == {"username"}


# --- 413 / 415 ------------------------------------------------------------------------------


def test_body_over_one_mib_is_413(client: FlaskClient, alice_headers: dict[str, str]) -> None:
    payload = b'{"task_name": "big", "description": "' + b"x" * ONE_MIB + b'"}'

    response = client.post(
        "/task", data=payload, content_type="application/json", headers=alice_headers
    )

    body = assert_error_shape(response, 413)
    assert body["message"] == "Request Entity Too Large"


def test_body_just_under_the_limit_is_not_413(
    client: FlaskClient, alice_headers: dict[str, str]
) -> None:
    # Below the size limit the request reaches validation (the description is too long: 422).
    payload = b'{"task_name": "big", "description": "' + b"x" * (ONE_MIB - 100) + b'"}'

    response = client.post(
        "/task", data=payload, content_type="application/json", headers=alice_headers
    )

    assert response.status_code != 413
    assert response.status_code in (201, 422)


@pytest.mark.parametrize(
    "send",
    [
        {"data": '{"task_name": "x"}', "content_type": "text/plain"},
        {"data": {"task_name": "x"}},  # application/x-www-form-urlencoded
        {"data": {"task_name": "x"}, "content_type": "multipart/form-data"},
        {"data": "<task/>", "content_type": "application/xml"},
    ],
)
def test_non_json_body_on_a_json_endpoint_is_415(
    client: FlaskClient, alice_headers: dict[str, str], send: dict[str, Any]
) -> None:
    response = client.post("/task", headers=alice_headers, **send)

    body = assert_error_shape(response, 415)
    assert body["message"] == "Unsupported Media Type"
    assert "application/json" in body["description"]


def test_json_with_charset_parameter_is_accepted(
    client: FlaskClient, alice_headers: dict[str, str]
) -> None:
    response = client.post(
        "/task",
        data='{"task_name": "charset"}',
        content_type="application/json; charset=utf-8",
        headers=alice_headers,
    )

    assert response.status_code == 201


# --- 422 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_name": ""}, "task_name"),
        ({"task_name": "x", "priority": "URGENT"}, "priority"),
        ({"task_name": "x", "unknown_field": 1}, "unknown_field"),
        ({}, "task_name"),
    ],
)
def test_invalid_fields_are_422_with_errors_per_location_and_field(
    client: FlaskClient, alice_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/task", json=body, headers=alice_headers)

    error = assert_error_shape(response, 422)
    assert error["message"] == "Unprocessable Entity"
    assert field in error["errors"]["json"]
    assert all(isinstance(m, str) for m in error["errors"]["json"][field])


def test_invalid_query_parameter_is_422_under_query(
    client: FlaskClient, alice_headers: dict[str, str]
) -> None:
    error = assert_error_shape(client.get("/tasks?per_page=0", headers=alice_headers), 422)

    assert "per_page" in error["errors"]["query"]


# --- 500 ------------------------------------------------------------------------------------


@pytest.fixture
def fragile_app(tmp_path: Path) -> Iterator[APIFlask]:
    """A fresh app (routes can only be added before its first request) with a route that fails."""
    application = create_app(settings_for(f"sqlite:///{tmp_path / 'fragile.db'}"))

    @application.get("/boom")
    def boom() -> dict[str, str]:
        raise RuntimeError("secret internals: password=hunter2 at /srv/app/boom.py")

    yield application
    with application.app_context():
        db.engine.dispose()


def test_unexpected_exception_is_500_json_without_internals(fragile_app: APIFlask) -> None:
    assert fragile_app.testing
    assert fragile_app.config["PROPAGATE_EXCEPTIONS"] is False

    response = fragile_app.test_client().get("/boom")

    body = assert_error_shape(response, 500)
    assert body["message"] == "Internal Server Error"
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "hunter2", "boom.py", "secret internals"):
        assert leak not in text


# --- headers on every kind of response ------------------------------------------------------


def test_security_headers_on_success_error_and_docs_responses(
    client: FlaskClient, alice_headers: dict[str, str]
) -> None:
    responses = [
        client.get("/health"),
        client.get("/tasks", headers=alice_headers),
        client.post("/task", json={"task_name": "headers"}, headers=alice_headers),
        client.get("/tasks"),
        client.get("/missing"),
        client.get("/openapi.json"),
        client.get("/apidocs"),
    ]
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.path, name)


# --- 404 wording, whatever the id looks like -----------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "message"),
    [
        ("get", "/task/abc", "task not found"),
        ("get", "/task/-1", "task not found"),
        ("get", "/task/1.5", "task not found"),
        ("get", "/task/0", "task not found"),
        ("get", "/task/99999999999", "task not found"),
        ("put", "/task/abc", "task not found"),
        ("delete", "/task/-1", "task not found"),
        ("get", "/task/abc/history", "task not found"),
        ("get", "/task/1.5/logs", "task not found"),
        ("post", "/task/abc/restore", "task not found"),
        ("delete", "/admin/tasks/abc", "task not found"),
        ("get", "/logs/abc", "log entry not found"),
        ("patch", "/admin/users/x", "user not found"),
        ("patch", "/admin/users/99999999999", "user not found"),
        ("get", "/admin/jobs/abc", "job not found"),
        ("get", "/admin/jobs/00000000-0000-4000-8000-000000000000", "job not found"),
    ],
)
def test_a_resource_path_with_any_id_answers_the_resources_404(
    client: FlaskClient, admin: Account, login: Login, method: str, url: str, message: str
) -> None:
    response = getattr(client, method)(url, headers=login(admin))

    body = assert_error_shape(response, 404)
    assert body["description"] == message


@pytest.mark.parametrize("url", ["/tasks/abc", "/task/abc/nope", "/nothing/1"])
def test_other_unknown_paths_keep_the_generic_404(client: FlaskClient, url: str) -> None:
    body = assert_error_shape(client.get(url), 404)

    assert "not found on the server" in body["description"]


def test_daily_log_path_is_no_job_id(client: FlaskClient, admin: Account, login: Login) -> None:
    # With job ids as any segment, GET /admin/jobs/daily-log was a job lookup, and OPTIONS on
    # the path advertised a GET the document does not have.
    response = client.get("/admin/jobs/daily-log", headers=login(admin))

    assert_error_shape(response, 405)
    assert "GET" not in response.headers["Allow"]


# --- no internal names in messages ---------------------------------------------------------

INTERNAL_NAMES = ("TaskCreateIn", "TaskUpdateIn", "LoginIn", "RegisterIn", "MeUpdateIn", "Task")


@pytest.mark.parametrize("payload", ["[]", "1", '"text"', "true", "[{}]"])
@pytest.mark.parametrize(
    ("method", "url"), [("post", "/task"), ("put", "/task/1"), ("patch", "/me"), ("post", "/login")]
)
def test_a_body_that_is_no_object_is_422_without_class_names(
    client: FlaskClient, alice_headers: dict[str, str], method: str, url: str, payload: str
) -> None:
    response = getattr(client, method)(
        url, data=payload, content_type="application/json", headers=alice_headers
    )

    body = assert_error_shape(response, 422)
    assert body["errors"] == {"json": {"_schema": ["Input should be a JSON object"]}}
    text = response.get_data(as_text=True)
    assert not any(name in text for name in INTERNAL_NAMES), text


@pytest.mark.parametrize(("method", "url"), [("put", "/task/1"), ("patch", "/me")])
def test_a_null_body_is_422_as_no_object(
    client: FlaskClient, alice_headers: dict[str, str], method: str, url: str
) -> None:
    # All fields are optional there: read as "no body", `null` changed nothing and answered 200.
    response = getattr(client, method)(
        url, data=" null ", content_type="application/json", headers=alice_headers
    )

    body = assert_error_shape(response, 422)
    assert body["errors"] == {"json": {"_schema": ["Input should be a JSON object"]}}


@pytest.mark.parametrize(
    "body", [{"status": 5}, {"priority": "urgent"}, {"task_name": 3}, {"status": None}]
)
def test_errors_of_optional_fields_name_the_field_only(
    client: FlaskClient, alice_headers: dict[str, str], body: dict[str, Any]
) -> None:
    task = client.post("/task", json={"task_name": "mine"}, headers=alice_headers).json

    response = client.put(f"/task/{task['id']}", json=body, headers=alice_headers)

    errors = assert_error_shape(response, 422)["errors"]["json"]
    assert set(errors) == set(body), errors  # not `status.str-enum[TaskStatus]`


# --- what the document says is what is accepted ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/tasks?due_to=0", "due_to"),
        ("/tasks?created_from=1700000000", "created_from"),
        ("/tasks?date=2024-01-01T00:00:00", "date"),
    ],
)
def test_dates_are_yyyy_mm_dd_only(
    client: FlaskClient, alice_headers: dict[str, str], url: str, field: str
) -> None:
    # pydantic read `0` as 1970-01-01 (Unix time); the document says `format: date`.
    body = assert_error_shape(client.get(url, headers=alice_headers), 422)

    assert field in body["errors"]["query"]


@pytest.mark.parametrize("assignee", ["1", True])
def test_an_assignee_id_is_a_json_number(
    client: FlaskClient, alice: Account, alice_headers: dict[str, str], assignee: Any
) -> None:
    response = client.post(
        "/task", json={"task_name": "x", "assigned_user_id": assignee}, headers=alice_headers
    )

    assert "assigned_user_id" in assert_error_shape(response, 422)["errors"]["json"]


@pytest.mark.parametrize("flag", [0, "no", "true"])
def test_is_active_is_a_json_boolean(
    client: FlaskClient, admin: Account, bob: Account, login: Login, flag: Any
) -> None:
    response = client.patch(
        f"/admin/users/{bob.id}", json={"is_active": flag}, headers=login(admin)
    )

    assert "is_active" in assert_error_shape(response, 422)["errors"]["json"]
