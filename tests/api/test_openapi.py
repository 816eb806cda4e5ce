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


# --- every answer documented, as the app gives it ------------------------------------------

PROBES = {"/health", "/ready"}


def _has_non_path_parameters(operation: dict[str, Any]) -> bool:
    return any(parameter["in"] != "path" for parameter in operation.get("parameters", []))


@pytest.mark.parametrize(
    ("status", "applies"),
    [
        ("414", lambda path, op: True),
        ("431", lambda path, op: True),
        ("429", lambda path, op: path not in PROBES),
        ("503", lambda path, op: path != "/health"),
        ("401", lambda path, op: bool(op.get("security"))),
        ("403", lambda path, op: any(s for r in op.get("security", []) for s in r.values())),
        ("404", lambda path, op: "{" in path),
        ("400", lambda path, op: "requestBody" in op),
        ("413", lambda path, op: "requestBody" in op),
        ("415", lambda path, op: "requestBody" in op),
        ("422", lambda path, op: "requestBody" in op or _has_non_path_parameters(op)),
    ],
)
def test_statuses_any_operation_of_a_kind_can_answer_are_documented(
    spec: dict[str, Any], status: str, applies: Any
) -> None:
    missing = [
        (method, path)
        for path, method, operation in _operations(spec)
        if applies(path, operation) and status not in operation["responses"]
    ]
    assert not missing


def test_rate_limited_and_login_answers_are_documented(spec: dict[str, Any]) -> None:
    for path in ("/login", "/register"):
        response = spec["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in response["headers"]
    assert "414" in spec["paths"]["/tasks"]["get"]["responses"]
    assert "414" in spec["paths"]["/admin/users"]["get"]["responses"]


def test_idempotent_operations_document_the_in_progress_conflict(spec: dict[str, Any]) -> None:
    for path in ("/task", "/upload-csv", "/admin/jobs/daily-log"):
        responses = spec["paths"][path]["post"]["responses"]
        assert "Retry-After" in responses["409"]["headers"], path
        assert "Idempotency-Key" in responses["422"]["description"], path


def test_not_modified_has_no_body(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        if "304" in operation["responses"]:
            assert "content" not in operation["responses"]["304"], (method, path)


# --- the schemas say what the validation does ----------------------------------------------


def test_a_body_with_required_fields_is_itself_required(spec: dict[str, Any]) -> None:
    # Without it, sending no body was valid by the document and answered 415 or 422.
    bodies = {
        (path, method): operation["requestBody"]
        for path, method, operation in _operations(spec)
        if "requestBody" in operation
    }
    required = {key for key, body in bodies.items() if body.get("required")}
    assert required == {
        ("/login", "post"),
        ("/register", "post"),
        ("/token/refresh", "post"),
        ("/task", "post"),
        ("/upload-csv", "post"),
    }


def test_update_fields_that_cannot_be_null_are_not_nullable(spec: dict[str, Any]) -> None:
    properties = spec["components"]["schemas"]["TaskUpdateIn"]["properties"]
    for name in ("task_name", "status", "priority"):
        assert "anyOf" not in properties[name] and properties[name].get("type") != "null", name
        assert "default" not in properties[name], name
    assert {"type": "null"} in properties["description"]["anyOf"]  # null clears it


def test_parameters_are_never_nullable(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        for parameter in operation.get("parameters", []):
            text = str(parameter["schema"])
            assert "'null'" not in text, (method, path, parameter["name"])


VALIDATED_STRINGS = [
    "",
    " ",
    "\t\n",
    "\u3000",
    "\x1c",
    "a",
    " a ",
    "a\x01b",
    "a\tb",
    "a\x00",
    "x" * 255,
    " " + "x" * 255 + " ",
    "x" * 256,
    "Ab",
    "Abc",
    " Abc ",
    "1bc",
    "A" * 64,
    "A" * 65,
]


@pytest.mark.parametrize(
    ("schema_name", "field", "model_name"),
    [
        ("TaskCreateIn", "task_name", "TaskCreateIn"),
        ("TaskCreateIn", "description", "TaskCreateIn"),
        ("LoginIn", "username", "LoginIn"),
        ("RegisterIn", "username", "RegisterIn"),
    ],
)
def test_documented_string_rules_accept_exactly_what_validation_accepts(
    spec: dict[str, Any], schema_name: str, field: str, model_name: str
) -> None:
    from pydantic import ValidationError

    from app.schemas import tasks, users

    model = getattr(tasks, model_name, None) or getattr(users, model_name)
    documented = spec["components"]["schemas"][schema_name]["properties"][field]
    documented = next((o for o in documented.get("anyOf", [documented]) if "type" in o), documented)
    others = {"task_name": "t", "username": "Abc", "email": "a@example.com", "password": "x" * 8}
    for value in VALIDATED_STRINGS:
        by_document = (
            bool(re.search(documented.get("pattern", ""), value))
            and len(value) >= documented.get("minLength", 0)
            and len(value) <= documented.get("maxLength", 10**9)
        )
        fields = {name: others[name] for name in others if name in model.model_fields}
        try:
            model.model_validate({**fields, field: value})
            by_validation = True
        except ValidationError:
            by_validation = False
        assert by_document == by_validation, (field, value)


def test_emails_the_validation_refuses_are_excluded(spec: dict[str, Any]) -> None:
    email = spec["components"]["schemas"]["RegisterIn"]["properties"]["email"]
    excluded = re.compile(email["not"]["pattern"])
    for address in ("a@b.test", "a@b.LOCAL", "a@x.invalid", "a@b.arpa"):
        assert excluded.search(address), address
    assert not excluded.search("a@testing.example.com")
    assert email["maxLength"] == 254


# --- links: from what creates an id to what takes it ----------------------------------------


def _operations_by_id(spec: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {op["operationId"]: (path, op) for path, _, op in _operations(spec)}


def test_every_operation_has_a_unique_operation_id(spec: dict[str, Any]) -> None:
    ids = [operation.get("operationId") for _, _, operation in _operations(spec)]
    assert None not in ids
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("source", "status", "targets"),
    [
        (
            "create_task",
            "201",
            {
                "get_task",
                "update_task",
                "delete_task",
                "restore_task",
                "task_history",
                "task_logs",
                "purge_task",
            },
        ),
        ("register", "201", {"update_user"}),
        ("list_users", "200", {"update_user"}),
        ("start_daily_log", "202", {"get_job"}),
        ("upload_csv", "202", {"get_job"}),
        ("task_logs", "200", {"get_log"}),
        ("list_tasks", "200", {"get_task", "get_log"}),
        ("login", "200", {"refresh"}),
    ],
)
def test_creating_operations_link_to_those_taking_their_ids(
    spec: dict[str, Any], source: str, status: str, targets: set[str]
) -> None:
    operations = _operations_by_id(spec)
    links = operations[source][1]["responses"][status].get("links", {})

    assert targets <= {link["operationId"] for link in links.values()}


def test_every_link_fills_its_targets_path_parameters(spec: dict[str, Any]) -> None:
    operations = _operations_by_id(spec)
    checked = 0
    for _, _, operation in _operations(spec):
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                path, target = operations[link["operationId"]]
                wanted = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link.get("parameters", {})) == wanted, (path, link)
                for expression in [*link.get("parameters", {}).values()]:
                    assert expression.startswith("$response.body#/"), expression
                checked += 1
    assert checked > 20


def test_component_names_and_titles_are_unique(spec: dict[str, Any]) -> None:
    # A client generator names a model by its title: two components with one title (APIFlask's
    # `Parent.Child` copies of a nested model) were refused as duplicates.
    schemas = spec["components"]["schemas"]
    assert not [name for name in schemas if "." in name]
    titles = [schema.get("title", name) for name, schema in schemas.items()]
    assert len(titles) == len(set(titles))


def test_every_422_has_the_validation_error_shape(spec: dict[str, Any]) -> None:
    # A route's own wording of its 422 was documented with the plain error shape: a generated
    # client parsed its `errors` as the optional field of another model.
    for path, method, operation in _operations(spec):
        if "422" in operation["responses"]:
            content = operation["responses"]["422"]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ValidationError"}, (
                method,
                path,
            )


@pytest.mark.parametrize(
    ("path", "method", "status", "headers"),
    [
        ("/task", "post", "201", {"Location"}),
        ("/admin/jobs/daily-log", "post", "202", {"Location"}),
        ("/task/{task_id}", "get", "200", {"ETag", "X-Cache"}),
        ("/task/{task_id}", "put", "200", {"ETag"}),
        ("/tasks", "get", "200", {"Link", "ETag", "X-Cache"}),
        ("/logs/{log_id}", "get", "200", {"ETag", "X-Cache"}),
    ],
)
def test_response_headers_the_views_send_are_documented(
    spec: dict[str, Any], path: str, method: str, status: str, headers: set[str]
) -> None:
    # Given to `output(headers=...)` as header objects, APIFlask documented none of them.
    documented = spec["paths"][path][method]["responses"][status]["headers"]
    assert set(documented) == headers
    assert all(header["schema"]["type"] == "string" for header in documented.values())
