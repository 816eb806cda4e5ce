"""API5 Broken Function Level Authorization: every role-gated endpoint, found in the app's URL map,
refuses every lower role (403) and the anonymous caller (401), before it reads any input."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from app.models import Role
from tests.conftest import Account, side_app
from tests.conftest import test_settings as settings_for
from tests.security.helpers import snapshot

Login = Callable[[Account], dict[str, str]]
RANK = {Role.USER: 0, Role.MODERATOR: 1, Role.ADMIN: 2}


def _gated_routes() -> list[tuple[str, str, frozenset[str]]]:
    """(method, rule, roles) of every endpoint whose auth names roles, from a throwaway app."""
    routes = []
    with side_app(settings_for(f"sqlite:///{Path(tempfile.mkdtemp()) / 'routes.db'}")) as app:
        for rule in app.url_map.iter_rules():
            spec = getattr(app.view_functions[rule.endpoint], "_spec", {})
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                if spec.get("roles"):
                    routes.append((method, rule.rule, frozenset(spec["roles"])))
    return routes


ROUTES = _gated_routes()
ALL_RULES = {rule for _m, rule, _r in ROUTES}


def test_every_admin_endpoint_and_the_known_gated_ones_are_role_gated() -> None:
    with side_app(settings_for(f"sqlite:///{Path(tempfile.mkdtemp()) / 'a.db'}")) as application:
        rules = application.url_map.iter_rules()
        admin_rules = {r.rule for r in rules if r.rule.startswith("/admin")}
    assert admin_rules and admin_rules <= ALL_RULES
    assert {"/upload-csv", "/task/<int:task_id>/restore"} <= ALL_RULES


# A value each converter matches (job ids are UUIDs); any other variable gets "abc".
CONVERTER_VALUES = {"int": "1", "uuid": "00000000-0000-4000-8000-000000000000"}


def _url(rule: str) -> str:
    return re.sub(
        r"<(?:(\w+):)?[^>]+>", lambda m: CONVERTER_VALUES.get(m.group(1) or "", "abc"), rule
    )


def _send(client: FlaskClient, method: str, rule: str, headers: dict[str, str]) -> int:
    url = _url(rule)
    if rule == "/upload-csv":
        data = {"file": (BytesIO(b"task_name,status,priority\nx,TRUE,LOW\n"), "t.csv")}
        return client.post(url, data=data, headers=headers).status_code
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return client.open(url, method=method, json=body, headers=headers).status_code


CASES = [
    (method, rule, role)
    for method, rule, roles in ROUTES
    for role in Role
    if RANK[role] < min(RANK[Role(r)] for r in roles)
]


@pytest.mark.parametrize(("method", "rule", "role"), CASES)
def test_a_lower_role_is_forbidden(
    app: APIFlask,
    client: FlaskClient,
    make_user: Callable[..., Account],
    login: Login,
    method: str,
    rule: str,
    role: Role,
) -> None:
    headers = login(make_user(f"caller_{role.value}", role))
    before = snapshot(app)
    assert _send(client, method, rule, headers) == 403
    assert snapshot(app) == before


@pytest.mark.parametrize(("method", "rule"), sorted({(m, r) for m, r, _ in ROUTES}))
def test_the_anonymous_caller_is_refused(
    app: APIFlask, client: FlaskClient, method: str, rule: str
) -> None:
    before = snapshot(app)
    assert _send(client, method, rule, {}) == 401
    assert snapshot(app) == before
