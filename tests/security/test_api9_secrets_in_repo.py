"""API9 Improper Inventory Management, the "credentials file" lesson: no tracked file holds a
secret. Private key blocks, a committed `.env`, AWS-style keys and password/secret literals in
configuration and application code fail the build; the documented placeholders are allowlisted
one by one below."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app.config import DEV_SECRET
from tests.conftest import PROJECT_ROOT

# Built from pieces so that this file does not match itself.
PRIVATE_KEY = re.compile("-----BEGIN " + r"(?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----")
AWS_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")
AWS_SECRET = re.compile(r"aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}", re.IGNORECASE)
SECRET_LITERAL = re.compile(
    r"(?<![{$])(?P<name>\b[A-Za-z_]*(?:password|passwd|pwd|secret|secret_key|api_?key|token))\b"
    r"[\"']?\s*(?::\s*[\w\[\]|. ]+?\s*)?[:=]\s*"  # an optional type annotation
    r"(?P<quote>[\"']?)(?P<value>[^\"'\s#,)]{3,})(?P=quote)",
    re.IGNORECASE,
)
# Where a literal credential would be configuration or application code (not docs nor tests).
CODE_SUFFIXES = {".py", ".yml", ".yaml", ".toml", ".ini", ".cfg", ".sh", ".json", ".env"}
CODE_NAMES = {"Dockerfile", "Makefile", "Procfile", ".env.example"}
# Test and benchmark fixtures use throwaway passwords by design.
EXEMPT_DIRS = ("tests/", "bench/")
# (path, value) pairs that are documented placeholders, not secrets.
ALLOWED_VALUES = {
    ("app/config.py", DEV_SECRET),  # the development default, refused outside dev
    (".env.example", "change-me"),  # the template's placeholders
    ("Makefile", "..."),  # the hint printed by `make run`: ADMIN_PASSWORD=...
    # The image check proves that a placeholder secret is refused at start-up.
    ("scripts/build_like_dockerfile.sh", "change-me"),
}
# Values that are not literals at all: references, types, empty defaults.
NOT_A_LITERAL = re.compile(r"^(\$|\{|None$|str$|bool$|int$|Field\(|os\.|settings|self\.|request)")


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p]


def text_of(path: str) -> str | None:
    file = PROJECT_ROOT / path
    if not file.is_file() or file.stat().st_size > 2_000_000:
        return None
    data = file.read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def is_code(path: str) -> bool:
    name = Path(path).name
    return not path.startswith(EXEMPT_DIRS) and (
        name in CODE_NAMES or Path(path).suffix in CODE_SUFFIXES
    )


def literal_secrets(path: str, text: str) -> list[str]:
    found = []
    for match in SECRET_LITERAL.finditer(text):
        value = match["value"]
        if not match["quote"] and Path(path).suffix == ".py":
            continue  # an unquoted right-hand side in Python is an expression, not a literal
        if NOT_A_LITERAL.match(value) or (path, value) in ALLOWED_VALUES:
            continue
        found.append(f"{path}: {match['name']} = {value[:4]}...")
    return found


def test_no_tracked_file_holds_a_private_key_or_cloud_key() -> None:
    offenders = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for pattern in (PRIVATE_KEY, AWS_ACCESS_KEY, AWS_SECRET):
            if pattern.search(text):
                offenders.append(f"{path}: {pattern.pattern[:30]}")
    assert offenders == []


def test_no_env_file_or_key_file_is_tracked() -> None:
    names = [Path(p).name for p in tracked_files()]
    env_files = [n for n in names if n == ".env" or (n.startswith(".env.") and n != ".env.example")]
    key_files = [n for n in names if n.endswith((".pem", ".key", ".p12", ".pfx")) or n == "id_rsa"]
    assert env_files == [] and key_files == []


def test_no_password_or_secret_literal_in_configuration_or_application_code() -> None:
    offenders = []
    for path in tracked_files():
        text = text_of(path) if is_code(path) else None
        if text is not None:
            offenders += literal_secrets(path, text)
    assert offenders == []


def test_the_allowlisted_placeholders_are_still_refused_outside_development() -> None:
    from app.config import PLACEHOLDER_SECRETS

    secrets = {value for _path, value in ALLOWED_VALUES if value != "..."}
    assert secrets <= PLACEHOLDER_SECRETS


@pytest.mark.parametrize(
    ("path", "text", "caught"),
    [
        ("app/x.py", 'PASSWORD = "hunter2hunter2"', True),
        ("app/x.py", "jwt_secret_key: str = 'abcdefgh12345'", True),
        ("docker-compose.yml", "POSTGRES_PASSWORD: s3cr3tvalue", True),
        ("docker-compose.yml", "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}", False),
        ("app/x.py", "password = body.password", False),
        (".env.example", "SECRET_KEY=change-me", False),
        (".env.example", "SECRET_KEY=realvalue123", True),
    ],
)
def test_the_literal_scanner_itself(path: str, text: str, caught: bool) -> None:
    assert bool(literal_secrets(path, text)) is caught
