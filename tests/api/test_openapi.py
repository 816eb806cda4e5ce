"""The OpenAPI document is valid and complete, and Swagger UI is served without a CDN."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

HTTP_METHODS = frozenset({"get", "post", "put", "patch", "delete"})
# Rules that serve the documentation itself rather than the API.
UNDOCUMENTED_ENDPOINTS = frozenset(
    {
        "static",
        "openapi.spec",
        "openapi.docs",
        "openapi.swagger_ui_oauth_redirect",
        "openapi.redoc",
        "swagger_assets.static",
        "metrics",  # Prometheus text format, not part of the JSON API
    }
)
ERROR_FIELDS = {"code", "message", "description", "errors"}


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.json
    assert isinstance(document, dict)
    return document


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _openapi_path(rule: str) -> str:
    """`/task/<int:task_id>` -> `/task/{task_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        assert node["$ref"].startswith("#/")
        target: Any = spec
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def test_spec_is_a_valid_openapi_document(spec: dict[str, Any]) -> None:
    validate(spec)  # raises on any violation

    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "MediaAmp Task API"
    assert spec["info"]["version"]


def test_every_url_rule_is_documented_with_its_methods(app: APIFlask, spec: dict[str, Any]) -> None:
    documented = {(path, method) for path, method, _ in _operations(spec)}
    expected = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED_ENDPOINTS:
            continue
        path = _openapi_path(rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            expected.add((path, method.lower()))

    assert expected, "the app has routes"
    assert expected - documented == set(), "routes missing from the spec"
    assert documented - expected == set(), "spec operations without a route"


def test_core_endpoints_are_in_the_spec(spec: dict[str, Any]) -> None:
    for path, method in [
        ("/login", "post"),
        ("/register", "post"),
        ("/tasks", "get"),
        ("/task", "post"),
        ("/task/{task_id}", "put"),
        ("/task/{task_id}", "delete"),
        ("/admin/dashboard", "get"),
        ("/admin/users", "get"),
        ("/admin/users/{user_id}", "patch"),
    ]:
        assert method in spec["paths"][path], (method, path)


def test_security_scheme_is_http_bearer(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]

    assert len(schemes) == 1
    (scheme,) = schemes.values()
    assert scheme["type"] == "http"
    assert scheme["scheme"].lower() == "bearer"


def test_every_authenticated_operation_requires_bearer_and_documents_401(
    app: APIFlask, spec: dict[str, Any]
) -> None:
    (scheme_name,) = spec["components"]["securitySchemes"]
    protected = {
        (_openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if getattr(app.view_functions[rule.endpoint], "_spec", {}).get("auth") is not None
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert protected, "some operations need authentication"
    documented_secure = 0
    for path, method, operation in _operations(spec):
        needs_auth = (path, method) in protected
        security = operation.get("security", spec.get("security"))
        if needs_auth:
            documented_secure += 1
            assert security, (method, path)
            assert any(scheme_name in requirement for requirement in security), (method, path)
            assert "401" in operation["responses"], (method, path)
        else:
            assert not security, f"{method} {path} is public but documented as secured"
    assert documented_secure == len(protected)


def test_public_endpoints_are_not_marked_secured(spec: dict[str, Any]) -> None:
    for path, method in [
        ("/login", "post"),
        ("/register", "post"),
        ("/token/refresh", "post"),
        ("/health", "get"),
        ("/ready", "get"),
    ]:
        assert not spec["paths"][path][method].get("security"), path


def test_admin_only_operations_document_403(spec: dict[str, Any]) -> None:
    admin_ops = [
        (path, method, op)
        for path, method, op in _operations(spec)
        if any("admin" in scopes for req in op.get("security", []) for scopes in req.values())
    ]
    assert len(admin_ops) >= 4
    for path, method, operation in admin_ops:
        assert "403" in operation["responses"], (method, path)


def test_every_error_response_references_the_error_shape(spec: dict[str, Any]) -> None:
    checked = 0
    for path, method, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            response = _resolve(spec, response)
            content = response.get("content", {})
            assert "application/json" in content, (method, path, status)
            schema_node = content["application/json"]["schema"]
            assert "$ref" in schema_node, (method, path, status)
            schema = _resolve(spec, schema_node)
            properties = set(schema.get("properties", {}))
            assert properties == ERROR_FIELDS, (method, path, status, properties)
            assert {"code", "message", "description"} <= set(schema.get("required", []))
            checked += 1
    assert checked > 20


def test_validation_errors_are_documented_on_operations_with_input(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        has_input = "requestBody" in operation or any(
            p.get("in") == "query" for p in operation.get("parameters", [])
        )
        if has_input:
            assert "422" in operation["responses"], (method, path)


class _AssetCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.urls.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.urls.append(str(values["href"]))


def test_swagger_ui_is_served_with_local_assets_only(client: FlaskClient) -> None:
    response = client.get("/apidocs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    collector = _AssetCollector()
    collector.feed(html)
    assert any(url.endswith(".js") for url in collector.urls)
    assert any(url.endswith(".css") for url in collector.urls)
    for url in collector.urls:
        assert not re.match(r"^(https?:)?//", url), f"remote asset {url}"
        assert url.startswith("/"), url
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", html)
    for url in collector.urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.data, url
        asset.close()


def test_swagger_ui_loads_this_apps_spec(client: FlaskClient) -> None:
    html = client.get("/apidocs").get_data(as_text=True)

    match = re.search(r'url:\s*"([^"]+)"', html)
    assert match is not None
    assert match.group(1) == "/openapi.json"
    assert client.get(match.group(1)).status_code == 200
    assert '"persistAuthorization": true' in html
