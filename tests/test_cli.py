"""`flask create-admin`: bootstraps an admin who can log in; the password never appears."""

from __future__ import annotations

import pytest
from apiflask import APIFlask
from click.testing import Result
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import Role, User

PASSWORD = "a long admin passphrase"
ADMIN_ARGS = ["--username", "Boss", "--email", "Boss@Example.com"]


@pytest.fixture(autouse=True)
def _no_admin_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADMIN_USERNAME", "ADMIN_EMAIL", "ADMIN_PASSWORD", "OTHER_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def create_admin(app: APIFlask, *args: str, input: str | None = None) -> Result:
    return app.test_cli_runner().invoke(args=["create-admin", *args], input=input)


def user_count(app: APIFlask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(User)) or 0


def stored_user(app: APIFlask, username: str) -> User | None:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        if user is not None:
            db.session.expunge(user)
        return user


def test_create_admin_with_password_from_the_environment_can_log_in(
    app: APIFlask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)

    result = create_admin(app, *ADMIN_ARGS)

    assert result.exit_code == 0, result.output
    assert "created admin 'boss'" in result.output
    assert PASSWORD not in result.output
    user = stored_user(app, "boss")
    assert user is not None
    assert (user.email, user.role, user.is_active) == ("boss@example.com", Role.ADMIN, True)
    assert user.password_hash is not None and PASSWORD not in user.password_hash

    tokens = client.post("/login", json={"username": "Boss", "password": PASSWORD})
    assert tokens.status_code == 200
    headers = {"Authorization": f"Bearer {tokens.json['access_token']}"}
    assert client.get("/me", headers=headers).json["role"] == "admin"
    assert client.get("/admin/dashboard", headers=headers).status_code == 200


def test_username_and_email_can_come_from_the_environment(
    app: APIFlask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_USERNAME", "envboss")
    monkeypatch.setenv("ADMIN_EMAIL", "envboss@example.com")
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)

    result = create_admin(app)

    assert result.exit_code == 0, result.output
    user = stored_user(app, "envboss")
    assert user is not None and user.role is Role.ADMIN


def test_password_env_option_names_another_variable(
    app: APIFlask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_PASSWORD", PASSWORD)

    result = create_admin(app, *ADMIN_ARGS, "--password-env", "OTHER_PASSWORD")

    assert result.exit_code == 0, result.output
    assert "Password" not in result.output, "no prompt when the variable is set"
    assert client.post("/login", json={"username": "boss", "password": PASSWORD}).status_code == 200


def test_a_second_run_fails_unless_if_missing(
    app: APIFlask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)
    assert create_admin(app, *ADMIN_ARGS).exit_code == 0

    again = create_admin(app, *ADMIN_ARGS)
    assert again.exit_code != 0
    assert "already exists" in again.output

    idempotent = create_admin(app, *ADMIN_ARGS, "--if-missing")
    assert idempotent.exit_code == 0, idempotent.output
    assert "nothing to do" in idempotent.output
    assert user_count(app) == 1
    for result in (again, idempotent):
        assert PASSWORD not in result.output


def test_an_email_another_account_has_does_not_stop_the_admin(
    app: APIFlask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Addresses are not unique: whoever registered ADMIN_EMAIL first cannot block the admin's
    creation (`--if-missing` at start-up would fail for good)."""
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)
    registered = client.post(
        "/register",
        json={"username": "squatter", "email": "boss@example.com", "password": "long enough pw"},
    )
    assert registered.status_code == 201

    result = create_admin(app, *ADMIN_ARGS, "--if-missing")

    assert result.exit_code == 0, result.output
    admin = stored_user(app, "boss")
    assert admin is not None
    assert (admin.email, admin.role) == ("boss@example.com", Role.ADMIN)
    assert user_count(app) == 2


@pytest.mark.parametrize(
    ("args", "password", "hint"),
    [
        (["--username", "1starts_with_digit", "--email", "a@example.com"], PASSWORD, "--username"),
        (["--username", "ab", "--email", "a@example.com"], PASSWORD, "--username"),
        (["--username", "has space", "--email", "a@example.com"], PASSWORD, "--username"),
        (["--username", "goodname", "--email", "not-an-email"], PASSWORD, "--email"),
        (["--username", "goodname", "--email", "a@"], PASSWORD, "--email"),
        (["--username", "goodname", "--email", "a@example.com"], "short", "password"),
    ],
)
def test_invalid_input_is_rejected_and_nothing_is_created(
    app: APIFlask, monkeypatch: pytest.MonkeyPatch, args: list[str], password: str, hint: str
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", password)

    result = create_admin(app, *args)

    assert result.exit_code == 2, result.output
    assert hint in result.output
    assert password not in result.output
    assert user_count(app) == 0


def test_username_and_email_are_required(app: APIFlask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)

    assert create_admin(app, "--username", "boss").exit_code == 2
    assert create_admin(app, "--email", "boss@example.com").exit_code == 2
    assert user_count(app) == 0


def test_without_the_variable_the_password_is_prompted_for_and_hidden(
    app: APIFlask, client: FlaskClient
) -> None:
    result = create_admin(app, *ADMIN_ARGS, input=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert "Password" in result.output
    assert PASSWORD not in result.output
    assert client.post("/login", json={"username": "boss", "password": PASSWORD}).status_code == 200


def test_a_mismatched_confirmation_creates_nothing(app: APIFlask) -> None:
    result = create_admin(app, *ADMIN_ARGS, input=f"{PASSWORD}\ndifferent passphrase\n")

    assert result.exit_code != 0
    assert "do not match" in result.output
    assert PASSWORD not in result.output
    assert user_count(app) == 0


def test_a_short_prompted_password_is_rejected(app: APIFlask) -> None:
    result = create_admin(app, *ADMIN_ARGS, input="tiny\ntiny\n")

    assert result.exit_code == 2
    assert "tiny" not in result.output
    assert user_count(app) == 0


# --- admin-hint (`make run` calls it at each start) ----------------------------------------------


def admin_hint(app: APIFlask) -> Result:
    return app.test_cli_runner().invoke(args=["admin-hint"])


def test_the_admin_hint_shows_while_there_is_no_admin(app: APIFlask) -> None:
    result = admin_hint(app)

    assert result.exit_code == 0, result.output
    assert "No admin yet. Create one with:" in result.output
    assert "create-admin --username admin --email admin@example.com" in result.output


def test_the_admin_hint_is_silent_once_an_admin_exists(
    app: APIFlask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)
    assert create_admin(app, *ADMIN_ARGS).exit_code == 0

    result = admin_hint(app)

    assert (result.exit_code, result.output) == (0, "")


def test_a_deactivated_admin_does_not_silence_the_hint(
    app: APIFlask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)
    assert create_admin(app, *ADMIN_ARGS).exit_code == 0
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.username == "boss"))
        assert admin is not None
        admin.is_active = False
        db.session.commit()

    assert "No admin yet" in admin_hint(app).output
