"""Shared by the deployment and observability tests: the Dockerfile and docker-compose.yml read as
data, an environment that keeps subprocesses off real servers, and bounded subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from apiflask import APIFlask
from celery import _state as celery_state

from app import create_app
from app.config import Settings
from app.extensions import db

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"

# Environment variables the app's processes read that are not fields of `Settings`, with the file
# that reads each (checked by the tests: a name listed here must really be used there).
NON_SETTINGS_VARIABLES: dict[str, str] = {
    # The server launcher (granian): granian's own names first, then the generic ones.
    "GRANIAN_WORKERS": "app/server.py",
    "WEB_CONCURRENCY": "app/server.py",
    "GRANIAN_BLOCKING_THREADS": "app/server.py",
    "GRANIAN_HOST": "app/server.py",
    "HOST": "app/server.py",
    "GRANIAN_PORT": "app/server.py",
    "PORT": "app/server.py",
    "GRANIAN_WORKERS_KILL_TIMEOUT": "app/server.py",
    "GRANIAN_RESPAWN_FAILED_WORKERS": "app/server.py",
    "GRANIAN_WORKERS_LIFETIME": "app/server.py",
    "PROMETHEUS_MULTIPROC_DIR": "app/observability/metrics.py",
}
# Read by the interpreter or the shell, not by the project.
INTERPRETER_VARIABLES = frozenset({"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
OUTPUT_SHOWN = 8000  # characters of a failed subprocess's output printed for pytest


def settings_env_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


# --- Dockerfile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, CMD...
    args: str


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions: comments dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments (parser directives too) and blank lines, even mid-continuation
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical = pending + line
        pending = ""
        keyword, _, args = logical.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def final_stage(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions of the last stage (the image that runs), from its FROM on."""
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    return instructions[last_from:]


def dockerfile_cmd(path: Path = DOCKERFILE) -> list[str]:
    """The final stage's CMD (exec form, a JSON array)."""
    cmds = [i for i in final_stage(path) if i.keyword == "CMD"]
    assert cmds, "the Dockerfile has no CMD"
    argv = json.loads(cmds[-1].args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


# --- docker-compose.yml ------------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


class MissingVariable(Exception):
    """What `docker compose` stops with for `${VAR:?message}` when VAR is unset or empty."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


_COMPOSE_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def compose_variables(value: str) -> set[str]:
    """Names a compose value interpolates (`${VAR...}` or `$VAR`; `$$` is a literal `$`)."""
    return {
        m.group("name") or m.group("bare")
        for m in _COMPOSE_VARIABLE.finditer(value)
        if not m.group("escaped")
    }


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
    `${VAR?err}`, `$VAR` and `$$`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        if (op == ":?" and not current) or (op == "?" and current is None):
            raise MissingVariable(name, arg)
        return current or ""

    return _COMPOSE_VARIABLE.sub(substitute, value)


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's forms (mapping or `KEY=value` list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def app_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this project's image (built from the Dockerfile)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


# --- apps --------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_app(settings: Settings) -> Iterator[APIFlask]:
    """An app of its own for one test. `create_app()` makes its Celery app the process's default
    (where shared jobs send their messages): the previous one is put back after, and the app's
    database connections are closed."""
    default = celery_state.default_app
    current = getattr(celery_state._tls, "current_app", None)
    application = create_app(settings)
    try:
        yield application
    finally:
        with application.app_context():
            db.session.remove()
            db.engine.dispose()
        celery_state.set_default_app(default)
        celery_state._set_current_app(current)


# --- subprocesses ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def isolated_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The current environment without any setting of the app, its server or Prometheus (a CI
    REDIS_URL or DATABASE_URL must not leak in), pointed at throwaway SQLite files instead."""
    dropped = settings_env_names() | set(NON_SETTINGS_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k.upper() not in dropped}
    env.update(
        APP_ENV="development",
        DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
        CELERY_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
        UPLOAD_DIR=str(tmp_path / "uploads"),
        DB_STARTUP_RETRIES="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def venv_executable(name: str) -> Path | None:
    """A console script installed beside the running interpreter (the venv's bin/), which need
    not be on PATH."""
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.exists() else None


def migrate_sqlite(env: Mapping[str, str], timeout: float = 60) -> None:
    """`flask --app app db upgrade` on the database of `env`."""
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=PROJECT_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass
class Background:
    """A subprocess leading its own process group, its stdout and stderr in files."""

    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the leader, then SIGKILL to whatever of its group is left."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(5)


@contextlib.contextmanager
def background(
    argv: list[str], env: Mapping[str, str], directory: Path, name: str
) -> Iterator[Background]:
    """Run `argv` from the project root for the duration of the block; always stopped after."""
    stdout_path, stderr_path = directory / f"{name}.out", directory / f"{name}.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env=dict(env), stdout=out, stderr=err, start_new_session=True
        )
    process = Background(popen, stdout_path, stderr_path)
    try:
        yield process
    finally:
        process.stop()
        # Shown by pytest when the test fails (the end: where the trouble usually is).
        print(f"--- {name} stdout (end) ---\n{process.stdout()[-OUTPUT_SHOWN:]}")
        print(f"--- {name} stderr (end) ---\n{process.stderr()[-OUTPUT_SHOWN:]}")


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, alive: Background | None = None
) -> None:
    """Poll `condition` until it holds; fail after `timeout` s or as soon as `alive` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and alive.popen.poll() is not None:
            raise AssertionError(f"exited ({alive.popen.returncode}) before: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.2)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` that is a JSON object."""
    objects = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                objects.append(value)
    return objects
