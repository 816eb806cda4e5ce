"""The image, built and run without a Docker engine: scripts/build_like_dockerfile.sh installs
requirements.lock into a fresh venv as the Dockerfile's build stage does, lays out the runtime
stage's WORKDIR (app/ and migrations/ only) and environment (APP_ENV=production, nothing
inherited), and runs the Dockerfile's CMD there.

Checked: production refuses a placeholder secret (naming it); the migrations run; the server
(granian, through app/server.py) serves /health and /ready (200, HSTS, request id echoed);
/metrics sums the requests of both workers (multi-process mode); the access line is JSON with the
request id; SIGTERM stops the server cleanly (exit 0); every line it wrote is JSON.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.deploy.helpers import PROJECT_ROOT, dockerfile_cmd

SCRIPT = PROJECT_ROOT / "scripts" / "build_like_dockerfile.sh"
TIMEOUT = 300  # seconds; the pip install dominates (about 15 s with warm local indexes)


def run_script(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The script in a process group of its own: on a timeout the whole group (pip included) is
    terminated, and the script's exit trap stops its server and removes its files."""
    env = {**os.environ, "PYTHON": sys.executable}
    process = subprocess.Popen(
        ["bash", str(SCRIPT), *argv],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"the build timed out after {TIMEOUT} s\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def results(stdout: str) -> dict[str, str]:
    """`RESULT <name> <details>` lines, by name."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, *rest = line.split(" ", 2)
            found[name] = rest[0] if rest else ""
    return found


@pytest.fixture(scope="module")
def build() -> subprocess.CompletedProcess[str]:
    missing = [tool for tool in ("bash", "curl", "setsid") if shutil.which(tool) is None]
    if missing:
        message = f"needs {', '.join(missing)}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return run_script(dockerfile_cmd())


def test_the_image_builds_and_serves(build: subprocess.CompletedProcess[str]) -> None:
    found = results(build.stdout)
    assert build.returncode == 0, f"{build.stdout}\n{build.stderr}"
    assert "FAILED" not in found, found
    assert found["pip-install"] == "ok"
    assert found["migrate"] == "ok"
    assert found["health"] == '200 {"status":"ok"}'
    assert found["hsts"] == "present"
    assert found["ready"].startswith("200 ") and '"database":"ok"' in found["ready"]
    assert found["metrics"] == "200 ready_requests=6"
    assert found["access-log"] == "json"
    assert found["stopped"] == "exit=0"
    assert int(found["log-lines"].removeprefix("json=")) > 0
    assert "ok" in found


def test_production_refuses_placeholder_secrets(build: subprocess.CompletedProcess[str]) -> None:
    refusal = results(build.stdout)["refuse-placeholder"]
    exit_code = int(refusal.split()[0].removeprefix("exit="))
    assert exit_code != 0, refusal
    assert re.search(r"(?<!JWT_)SECRET_KEY must be set", refusal), refusal
    assert "APP_ENV=production" in refusal


def test_the_script_runs_the_dockerfile_cmd(build: subprocess.CompletedProcess[str]) -> None:
    assert f"CMD: {' '.join(dockerfile_cmd())}" in build.stderr
