"""Observability: request ids, JSON logs (the app's, the server's, Celery's), Prometheus
metrics and their token, and the production-only transport rules (HSTS, secure cookies).

In-process tests use the `app` fixture (both backends). The server and a Celery worker run as real
subprocesses on throwaway SQLite files, each bounded in time and stopped at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import AppEnv
from app.observability import logging as observability_logging
from app.observability.logging import configure_logging
from app.services import loader
from tests.conftest import Account
from tests.conftest import test_settings as settings_for
from tests.deploy.helpers import (
    background,
    free_port,
    fresh_app,
    isolated_env,
    json_lines,
    migrate_sqlite,
    wait_until,
)

Login = Callable[[Account], dict[str, str]]
LogLines = Callable[[], list[dict[str, Any]]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
TASK_ROUTE = "/task/<int:task_id>"
METRICS_TOKEN = "s3cret-token-xyz"
HSTS = "Strict-Transport-Security"
CELERY_APP = "app.celery_worker.celery"
SERVER_READY_REQUESTS = 6  # at least


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogLines]:
    """The JSON lines the app logs during the test, through the real set-up (`configure_logging`:
    a root handler on stderr, JSON formatter, request-context filter), with the stderr it sees
    swapped for a buffer (so any `create_app()` in the test logs there too)."""
    buffer = io.StringIO()
    monkeypatch.setattr(observability_logging, "sys", SimpleNamespace(stderr=buffer))
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("json", "INFO")
    yield lambda: json_lines(buffer.getvalue())
    for installed in list(root.handlers):
        root.removeHandler(installed)
    for saved in saved_handlers:
        root.addHandler(saved)
    root.setLevel(saved_level)


def request_lines(lines: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in lines
        if line.get("logger") == "app.request" and line.get("request_id") == request_id
    ]


def scrape(client: FlaskClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples carrying (at least) `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def create_task(client: FlaskClient, headers: dict[str, str], **fields: Any) -> int:
    response = client.post("/task", json={"task_name": "observed", **fields}, headers=headers)
    body = response.get_json()
    assert response.status_code == 201 and body is not None, body
    return int(body["id"])


def fixture_url(app: APIFlask) -> str:
    return str(app.config["SQLALCHEMY_DATABASE_URI"])


# --- request ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["abc-123", "req_1.2:3", "A" * 128, "0f" * 16])
def test_a_valid_request_id_is_echoed(client: FlaskClient, given: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": given})
    assert response.headers["X-Request-ID"] == given


def test_a_request_id_is_generated_when_missing(client: FlaskClient) -> None:
    first = client.get("/health").headers["X-Request-ID"]
    second = client.get("/health").headers["X-Request-ID"]
    assert GENERATED_ID.match(first) and GENERATED_ID.match(second)
    assert first != second


@pytest.mark.parametrize(
    "given",
    ["", "A" * 129, "has space", "semi;colon", "a/b", '"quoted"', "line\tbreak", "{json}"],
    ids=["empty", "too-long", "space", "semicolon", "slash", "quotes", "tab", "braces"],
)
def test_an_invalid_request_id_is_replaced(client: FlaskClient, given: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": given})
    echoed = response.headers["X-Request-ID"]
    assert GENERATED_ID.match(echoed), echoed
    assert echoed != given


def test_errors_carry_the_request_id_too(client: FlaskClient) -> None:
    for path, status in [("/no/such/route", 404), ("/me", 401)]:
        response = client.get(path, headers={"X-Request-ID": "err-id-1"})
        assert response.status_code == status
        assert response.headers["X-Request-ID"] == "err-id-1"


# --- JSON request log ------------------------------------------------------------------------


def test_request_log_line_is_json_with_its_fields(
    client: FlaskClient, log_lines: LogLines, alice: Account, login: Login
) -> None:
    headers = login(alice)
    response = client.get("/me", headers={**headers, "X-Request-ID": "me-req-1"})
    assert response.status_code == 200

    (line,) = request_lines(log_lines(), "me-req-1")
    assert line["method"] == "GET"
    assert line["path"] == "/me"
    assert line["status"] == 200
    assert isinstance(line["latency_ms"], int | float) and 0 <= line["latency_ms"] < 60_000
    assert line["user_id"] == alice.id
    assert line["level"] == "INFO"
    assert datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S%z")


def test_anonymous_and_failed_requests_are_logged_without_a_user(
    client: FlaskClient, log_lines: LogLines
) -> None:
    client.get("/health", headers={"X-Request-ID": "anon-1"})
    client.get("/me", headers={"X-Request-ID": "anon-2", "Authorization": "Bearer nonsense"})
    client.get("/task/999999", headers={"X-Request-ID": "anon-3"})

    lines = log_lines()
    ((health,), (me,), (task,)) = (request_lines(lines, f"anon-{i}") for i in (1, 2, 3))
    assert (health["path"], health["status"], health["user_id"]) == ("/health", 200, None)
    assert (me["status"], me["user_id"]) == (401, None)
    assert (task["path"], task["status"]) == ("/task/999999", 401)


def test_generated_request_id_is_the_logged_one(client: FlaskClient, log_lines: LogLines) -> None:
    response = client.get("/health")
    request_id = response.headers["X-Request-ID"]
    assert len(request_lines(log_lines(), request_id)) == 1


def test_every_line_logged_during_a_request_carries_its_id(
    app: APIFlask, log_lines: LogLines
) -> None:
    with fresh_app(settings_for(fixture_url(app))) as application:

        @application.get("/noisy")
        def noisy() -> dict[str, str]:
            logging.getLogger("app.services.something").warning("deep inside", extra={"n": 7})
            return {"ok": "yes"}

        application.test_client().get("/noisy", headers={"X-Request-ID": "noisy-1"})

    (inner,) = [line for line in log_lines() if line.get("message") == "deep inside"]
    assert inner["request_id"] == "noisy-1"
    assert inner["level"] == "WARNING" and inner["n"] == 7


# --- /metrics --------------------------------------------------------------------------------


def test_requests_are_counted_per_route_template_with_latency_histogram(
    client: FlaskClient, admin: Account, login: Login
) -> None:
    headers = login(admin)
    task_id = create_task(client, headers)
    before = scrape(client)

    caches = [client.get(f"/task/{task_id}", headers=headers).headers["X-Cache"] for _ in range(2)]
    assert client.get("/task/999999", headers=headers).status_code == 404

    after = scrape(client)
    labels = {"method": "GET", "endpoint": TASK_ROUTE}
    assert (
        value(after, "http_requests_total", **labels, status="200")
        - value(before, "http_requests_total", **labels, status="200")
        == 2
    )
    assert (
        value(after, "http_requests_total", **labels, status="404")
        - value(before, "http_requests_total", **labels, status="404")
        == 1
    )
    # The raw ids never become label values.
    endpoints = {dict(ls).get("endpoint") for (_, ls) in after}
    assert not any(e and re.search(r"/task/\d", e) for e in endpoints), endpoints

    count = "http_request_duration_seconds_count"
    assert value(after, count, **labels) - value(before, count, **labels) == 3
    buckets = {
        dict(ls)["le"] for (n, ls) in after if n.endswith("_bucket") and labels.items() <= ls
    }
    assert {"0.005", "0.1", "1.0", "+Inf"} <= buckets
    assert value(after, "http_request_duration_seconds_bucket", **labels, le="+Inf") == value(
        after, count, **labels
    )
    assert caches[1] == "HIT"


def test_cache_lookups_are_counted(client: FlaskClient, alice: Account, login: Login) -> None:
    headers = login(alice)
    task_id = create_task(client, headers)
    before = scrape(client)

    seen = [client.get(f"/task/{task_id}", headers=headers).headers["X-Cache"] for _ in range(3)]
    seen += [client.get("/tasks", headers=headers).headers["X-Cache"] for _ in range(2)]

    after = scrape(client)
    assert seen[1:3] == ["HIT", "HIT"] and seen[-1] == "HIT"
    for result in ("miss", "hit"):
        delta = value(after, "cache_lookups_total", result=result) - value(
            before, "cache_lookups_total", result=result
        )
        assert delta == seen.count(result.upper()), (result, seen)


def test_loader_metrics_follow_a_run(
    app: APIFlask, client: FlaskClient, admin: Account, login: Login
) -> None:
    headers = login(admin)
    for _ in range(3):
        create_task(client, headers)
    create_task(client, headers, status="inactive")
    before = scrape(client)

    started = time.time()
    with app.app_context():
        run = loader.run_inline(date.today(), "cli")
    assert run.rows_logged == 3

    after = scrape(client)
    assert value(after, "loader_rows_logged_total") - value(before, "loader_rows_logged_total") == 3
    last = value(after, "loader_last_success_timestamp_seconds")
    assert last > value(before, "loader_last_success_timestamp_seconds")
    assert started - 5 <= last <= datetime.now(UTC).timestamp() + 5


def test_metrics_token_is_required_when_set(app: APIFlask) -> None:
    settings = settings_for(fixture_url(app), metrics_token=METRICS_TOKEN)
    with fresh_app(settings) as protected:
        client = protected.test_client()
        assert client.get("/metrics").status_code == 401
        for wrong in ("Bearer wrong-token", f"Bearer {METRICS_TOKEN}x", "Basic czNjcmV0"):
            assert client.get("/metrics", headers={"Authorization": wrong}).status_code == 401
        response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert response.status_code == 200
        assert b"http_requests_total" in response.data


def test_metrics_are_open_without_a_token(client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 200


# --- production-only transport rules ---------------------------------------------------------


@pytest.mark.parametrize("env", [AppEnv.STAGING, AppEnv.PRODUCTION])
def test_hsts_and_secure_cookies_in_staging_and_production(app: APIFlask, env: AppEnv) -> None:
    settings = settings_for(fixture_url(app), app_env=env)
    assert len(settings.secret_key) >= 32 and len(settings.jwt_secret_key) >= 32
    with fresh_app(settings) as production:
        assert production.config["SESSION_COOKIE_SECURE"] is True
        assert production.config["PREFERRED_URL_SCHEME"] == "https"
        response = production.test_client().get("/health")
        assert response.status_code == 200
        assert response.headers[HSTS] == "max-age=31536000"


def test_no_hsts_nor_secure_cookies_in_testing(app: APIFlask, client: FlaskClient) -> None:
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert HSTS not in client.get("/health").headers


def test_no_hsts_in_development(app: APIFlask) -> None:
    with fresh_app(settings_for(fixture_url(app), app_env=AppEnv.DEVELOPMENT)) as development:
        assert development.config["SESSION_COOKIE_SECURE"] is False
        assert HSTS not in development.test_client().get("/health").headers


def test_metrics_survive_a_database_that_does_not_answer(tmp_path: Path) -> None:
    """The loader's figures come from the database; without it the request metrics are still
    served (they matter most then) instead of the whole scrape failing."""
    with fresh_app(settings_for(f"sqlite:///{tmp_path / 'no-schema.db'}")) as broken:
        client = broken.test_client()
        client.get("/health")
        response = client.get("/metrics")
        assert response.status_code == 200
        body = response.get_data(as_text=True)
        assert 'endpoint="/health"' in body
        assert "loader_rows_logged_total" not in body


# --- real processes: the server (granian) and a Celery worker --------------------------------


@dataclass(frozen=True)
class ServerRun:
    output: str  # stdout and stderr
    metrics: str
    ready_requests: int  # /ready requests answered 200, by both workers
    user_id: int  # of the account that called /me
    multiproc_dir: Path
    worker_pids: set[int]


def http_call(
    url: str,
    request_id: str,
    *,
    body: dict[str, Any] | None = None,
    token: str | None = None,
) -> tuple[int, str]:
    """A GET, or a POST of `body` as JSON; the status and the body. Each call a new connection."""
    headers = {"X-Request-ID": request_id, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        status: int = response.status
        return status, response.read().decode()


def metric_files(directory: Path) -> set[int]:
    """The pids that wrote request counts in the Prometheus directory (counter_<pid>.db)."""
    return {int(p.stem.rpartition("_")[2]) for p in directory.glob("counter_*.db")}


@pytest.fixture(scope="module")
def server_run(tmp_path_factory: pytest.TempPathFactory) -> ServerRun:
    """The server started as the Dockerfile does (`python -m app.server`: granian) with two
    workers and a PROMETHEUS_MULTIPROC_DIR that does not exist yet; an account registers, logs
    in and calls /me; /ready is called until both workers have answered some; stopped."""
    tmp_path = tmp_path_factory.mktemp("server")
    port = free_port()
    multiproc_dir = tmp_path / "prometheus" / "not-yet"
    env = isolated_env(
        tmp_path,
        HOST="127.0.0.1",
        PORT=str(port),
        LOG_FORMAT="json",
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir),
    )
    migrate_sqlite(env)
    argv = [sys.executable, "-m", "app.server"]
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return http_call(f"{base}/health", "probe")[0] == 200
        except OSError:
            return False

    with background(argv, env, tmp_path, "server") as server:
        wait_until(healthy, 30, "the server to answer /health", alive=server)
        account = {"username": "observed", "email": "observed@example.com", "password": "pw-" * 4}
        status, _ = http_call(f"{base}/register", "server-register", body=account)
        assert status == 201
        login = {"username": account["username"], "password": account["password"]}
        status, tokens = http_call(f"{base}/login", "server-login", body=login)
        assert status == 200
        token = json.loads(tokens)["access_token"]
        status, me = http_call(f"{base}/me", "server-me-1", token=token)
        assert status == 200
        # The kernel spreads new connections over the workers (a socket each): ask until both
        # have counted some, so that the scrape below must add up two processes' counts.
        ready_requests = 0
        while ready_requests < SERVER_READY_REQUESTS or len(metric_files(multiproc_dir)) < 2:
            assert ready_requests < 200, f"one worker answered everything: {multiproc_dir}"
            assert http_call(f"{base}/ready?x=1", "server-ready-1")[0] == 200
            ready_requests += 1
        status, metrics = http_call(f"{base}/metrics", "server-metrics")
        assert status == 200
        worker_pids = metric_files(multiproc_dir)
        server.stop()
        assert server.popen.returncode == 0
        return ServerRun(
            server.stdout() + server.stderr(),
            metrics,
            ready_requests,
            int(json.loads(me)["id"]),
            multiproc_dir,
            worker_pids,
        )


def test_the_access_line_is_the_apps_json_line_with_request_and_user_id(
    server_run: ServerRun,
) -> None:
    lines = json_lines(server_run.output)
    (me,) = request_lines(lines, "server-me-1")
    assert me["user_id"] == server_run.user_id
    assert (me["method"], me["path"], me["status"]) == ("GET", "/me", 200)
    ready = request_lines(lines, "server-ready-1")
    assert len(ready) == server_run.ready_requests  # one line per request, not two
    line = ready[0]
    assert line["path"] == "/ready" and line["query"] == "x=1"
    assert line["method"] == "GET" and line["status"] == 200
    assert isinstance(line["latency_ms"], int | float) and line["latency_ms"] >= 0
    assert "user_id" in line and line["user_id"] is None  # /ready is anonymous
    assert line["remote_addr"] == "127.0.0.1"


def test_every_line_the_server_writes_is_json(server_run: ServerRun) -> None:
    lines = [line for line in server_run.output.splitlines() if line.strip()]
    not_json = [line for line in lines if not json_lines(line)]
    assert not not_json, not_json
    objects = json_lines(server_run.output)
    loggers = {line.get("logger") for line in objects}
    # granian's own (main process and workers), the launcher's, the app's request lines.
    assert {"_granian", "app.server", "app.request"} <= loggers
    assert "granian.access" not in loggers, "the app's request line is the access line"
    starting = [line for line in objects if line.get("message", "").startswith("Starting granian")]
    assert starting and {"time", "level", "logger", "message"} <= set(starting[0])
    spawned = [line for line in objects if line.get("message", "").startswith("Spawning worker")]
    assert len(spawned) == 2


def test_metrics_are_summed_over_the_workers(server_run: ServerRun) -> None:
    """Multi-process mode: each worker wrote its counts in the directory, and /metrics (served
    by one of them) adds them all up."""
    assert len(server_run.worker_pids) == 2
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(server_run.metrics)
        for sample in family.samples
    }
    ready = value(samples, "http_requests_total", endpoint="/ready", status="200")
    assert ready == server_run.ready_requests


def test_the_server_prepares_the_multiprocess_directory(server_run: ServerRun) -> None:
    """app.server made the directory (it did not exist) before the workers started; it holds
    the files of this run's workers only (it is emptied at each start: tests/unit)."""
    assert server_run.multiproc_dir.is_dir()
    pids = {
        int(line["message"].rpartition(" ")[2])
        for line in json_lines(server_run.output)
        if line.get("message", "").startswith("Spawning worker")
    }
    files = {int(p.stem.rpartition("_")[2]) for p in server_run.multiproc_dir.glob("*.db")}
    assert files == pids == server_run.worker_pids


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


@pytest.fixture(scope="module")
def celery_worker_stderr(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A worker as compose runs it (one pool process), on the embedded broker; once it is ready
    its pool process is SIGKILLed (as the kernel's OOM killer would), then it is stopped.
    Returns its stderr up to `ready`, and all of it."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the pool process")
    tmp_path = tmp_path_factory.mktemp("celery")
    env = isolated_env(tmp_path, LOG_FORMAT="json")
    argv = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "--loglevel=info"]
    argv += ["--concurrency=1", "--without-mingle", "--without-gossip"]
    with background(argv, env, tmp_path, "celery-worker") as worker:

        def ready() -> bool:
            return any("ready" in str(line.get("message")) for line in json_lines(worker.stderr()))

        wait_until(ready, 60, "the worker's JSON 'ready' line", alive=worker)
        until_ready = worker.stderr()
        (pool_process,) = children_of(worker.popen.pid)
        os.kill(pool_process, signal.SIGKILL)
        wait_until(lambda: "exited with" in worker.stderr(), 20, "the pool process death line")
        # No graceful stop to wait for: on the embedded broker a worker whose pool process was
        # replaced does not finish a warm shutdown (with Redis it does).
        worker.stop(timeout=2)
        return until_ready, worker.stderr()


def test_celery_worker_logs_are_json(celery_worker_stderr: tuple[str, str]) -> None:
    until_ready, _ = celery_worker_stderr
    lines = json_lines(until_ready)
    assert lines, until_ready
    assert all(line.get("level") for line in lines)
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    (ready,) = [line for line in lines if str(line["message"]).endswith(" ready.")]
    assert ready["logger"].startswith("celery") and ready["level"] == "INFO"


def test_celery_pool_process_death_is_logged_as_json(
    celery_worker_stderr: tuple[str, str],
) -> None:
    _, everything = celery_worker_stderr
    (death,) = [line for line in everything.splitlines() if "exited with" in line]
    assert json_lines(death), death
