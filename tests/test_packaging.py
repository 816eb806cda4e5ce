"""pyproject.toml is the one list of direct dependencies; the locks are resolved from it
(`make lock`) and pin the same versions; `pip install .` gets the `app` package with its
migrations, and that installed copy starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.helpers import PROJECT_ROOT, isolated_env

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def declared(requirements: list[str]) -> dict[str, str]:
    """{name: version} of pinned requirements (`name[extras]==version`), names normalised."""
    pins = {}
    for text in requirements:
        requirement = Requirement(text)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{text}: not pinned"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def locked(lock: str) -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / lock).read_text().splitlines():
        if match := LOCK_LINE.match(line.strip()):
            pins[canonicalize_name(match[1])] = match[2]
    assert pins, f"{lock} pins nothing"
    return pins


RUNTIME = declared(PYPROJECT["project"]["dependencies"])
DEV = declared(PYPROJECT["project"]["optional-dependencies"]["dev"])


def mismatches(wanted: dict[str, str], lock: str) -> dict[str, tuple[str, str | None]]:
    pins = locked(lock)
    return {name: (v, pins.get(name)) for name, v in wanted.items() if pins.get(name) != v}


def test_the_dependencies_are_the_runtime_locks_pins() -> None:
    assert mismatches(RUNTIME, "requirements.lock") == {}, "run `make lock`"


def test_the_dev_extra_and_the_runtime_set_are_the_dev_locks_pins() -> None:
    assert mismatches({**RUNTIME, **DEV}, "requirements-dev.lock") == {}, "run `make lock`"


def test_the_dev_lock_keeps_every_runtime_version() -> None:
    """What the image runs (requirements.lock) is what the tests ran (requirements-dev.lock)."""
    assert mismatches(locked("requirements.lock"), "requirements-dev.lock") == {}


def test_pyproject_is_the_only_list_of_dependencies() -> None:
    assert sorted(p.name for p in PROJECT_ROOT.glob("requirements*.in")) == []
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "pip-compile" in makefile and "requirements.in" not in makefile


# --- the wheel --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps .` (its build backend, pinned in pyproject.toml, fetched by pip)."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("mediaamp_task_backend-*.whl")
    return built


def source_files(directory: str) -> set[str]:
    return {
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in (PROJECT_ROOT / directory).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_the_app_package_and_its_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {n for n in names if not n.startswith("mediaamp_task_backend-")}
    migrations = {f"app/{name}" for name in source_files("migrations")}
    assert packaged == source_files("app") | migrations
    assert "app/migrations/env.py" in packaged and "app/migrations/alembic.ini" in packaged


def run_in(work: Path, env: dict[str, str], *args: str) -> str:
    """`python ARGS` in `work` with `env`; its output, once it has succeeded."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_installed_wheel_migrates_and_serves(wheel: Path, tmp_path: Path) -> None:
    """The wheel unpacked as pip installs a pure-Python wheel (into a site-packages of its own,
    the dependencies from this venv), run from a directory that is not a checkout."""
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = isolated_env(work, PYTHONPATH=str(site), CACHE_DIR=str(work / "cache"))
    env.pop("PYTHONSAFEPATH", None)
    run_in(work, env, "-m", "flask", "--app", "app", "db", "upgrade")
    probe = (
        "import app, app.config as c\n"
        "client = app.create_app().test_client()\n"
        "print(app.__file__, app.MIGRATIONS_DIR, c.INSTANCE_DIR, client.get('/health').status_code)"
    )
    module, migrations, instance, status = run_in(work, env, "-c", probe).split()[-4:]
    assert Path(module).is_relative_to(site), "imported the checkout, not the wheel"
    assert Path(migrations) == site / "app" / "migrations"
    # instance/ (the embedded broker, the cache, uploads) in the working directory, not among
    # the installed packages.
    assert Path(instance) == work / "instance"
    assert status == "200"
    assert sorted(os.listdir(site)) == ["app", wheel.name.split("-py3")[0] + ".dist-info"]
