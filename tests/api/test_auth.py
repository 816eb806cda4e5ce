"""Accounts and sessions: /register, /login, /token/refresh, /logout and /me.

Sessions are token families: a login starts one, each refresh spends one refresh token and issues
the next pair in the same family, and revoking the family (logout, reuse of a spent refresh token,
password change, deactivation) kills its refresh tokens and its access tokens at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import argon2
import jwt
import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from app.extensions import db
from app.models import RefreshToken, Role, TokenFamily, User
from tests.conftest import TEST_PASSWORD, Account

NEW_PASSWORD = "a brand new passphrase"


# --------------------------------------------------------------------------- helpers


@dataclass
class Session:
    """One login: its token pair as the API returned it."""

    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start_session(client: FlaskClient, username: str, password: str = TEST_PASSWORD) -> Session:
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.json
    return Session(response.json["access_token"], response.json["refresh_token"])


def rotate(client: FlaskClient, refresh_token: str) -> TestResponse:
    return client.post("/token/refresh", json={"refresh_token": refresh_token})


def register(client: FlaskClient, **overrides: Any) -> TestResponse:
    body: dict[str, Any] = {
        "username": "carol",
        "email": "carol@example.com",
        "password": "s3cret-passphrase",
    }
    body.update(overrides)
    return client.post("/register", json=body)


def assert_error(response: TestResponse, status: int) -> dict[str, Any]:
    """The one JSON error shape: {code, message, description[, errors]}."""
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.json
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["description"], str) and body["description"]
    assert set(body) <= {"code", "message", "description", "errors"}
    return body


def assert_unauthorized(response: TestResponse) -> dict[str, Any]:
    body = assert_error(response, 401)
    assert body["message"] == "Unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return body


def assert_no_password_material(response: TestResponse) -> None:
    text = response.get_data(as_text=True)
    assert "password" not in text
    assert "$argon2" not in text


def refresh_row(app: APIFlask, raw_refresh_token: str) -> RefreshToken:
    digest = hashlib.sha256(raw_refresh_token.encode()).hexdigest()
    with app.app_context():
        row = db.session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
        assert row is not None
        db.session.expunge(row)
        return row


def family_of(access_token: str) -> str:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return str(claims["fid"])


def load_user(app: APIFlask, user_id: int) -> User:
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        db.session.expunge(user)
        return user


@pytest.fixture
def verify_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every call of argon2's PasswordHasher.verify, as (hash, password); the real verification
    still runs."""
    calls: list[tuple[str, str]] = []
    original = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        calls.append((str(hash), str(password)))
        return original(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    yield calls


# --------------------------------------------------------------------------- POST /register


def test_registering_creates_a_user_account_and_returns_it(client: FlaskClient) -> None:
    response = register(client)

    assert response.status_code == 201, response.json
    body = response.json
    assert body["username"] == "carol"
    assert body["email"] == "carol@example.com"
    assert body["role"] == "user"
    assert body["is_active"] is True
    assert body["last_login_at"] is None
    assert isinstance(body["id"], int)
    assert {"created_at", "updated_at"} <= set(body)
    assert_no_password_material(response)


def test_a_registered_account_can_log_in(client: FlaskClient) -> None:
    assert register(client).status_code == 201

    session = start_session(client, "carol", "s3cret-passphrase")

    me = client.get("/me", headers=session.headers)
    assert me.status_code == 200
    assert me.json["username"] == "carol"


def test_the_password_is_stored_as_an_argon2id_hash_not_in_clear(
    app: APIFlask, client: FlaskClient
) -> None:
    response = register(client, password="plain-text-secret")
    assert response.status_code == 201

    user = load_user(app, response.json["id"])
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert "plain-text-secret" not in user.password_hash
    assert argon2.PasswordHasher().verify(user.password_hash, "plain-text-secret")


@pytest.mark.parametrize("role", ["admin", "moderator", "user"])
def test_a_role_in_the_registration_body_is_refused(
    app: APIFlask, client: FlaskClient, role: str
) -> None:
    response = register(client, role=role)

    body = assert_error(response, 422)
    assert "role" in body["errors"]["json"]
    with app.app_context():
        assert db.session.scalar(select(User).where(User.username == "carol")) is None


@pytest.mark.parametrize(
    "extra",
    [{"is_active": False}, {"id": 1}, {"password_hash": "x"}, {"last_login_at": None}],
    ids=["is_active", "id", "password_hash", "last_login_at"],
)
def test_any_unknown_field_in_the_registration_body_is_refused(
    client: FlaskClient, extra: dict[str, Any]
) -> None:
    body = assert_error(register(client, **extra), 422)

    assert set(body["errors"]["json"]) == set(extra)


def test_a_registered_account_always_gets_the_user_role(app: APIFlask, client: FlaskClient) -> None:
    response = register(client)

    assert response.status_code == 201
    assert load_user(app, response.json["id"]).role == Role.USER


@pytest.mark.parametrize("missing", ["username", "email", "password"])
def test_each_registration_field_is_required(client: FlaskClient, missing: str) -> None:
    body = {"username": "carol", "email": "carol@example.com", "password": "s3cret-passphrase"}
    del body[missing]

    errors = assert_error(client.post("/register", json=body), 422)["errors"]["json"]

    assert missing in errors


@pytest.mark.parametrize("password", ["", "a", "1234567", "seven77"])
def test_a_password_shorter_than_8_characters_is_refused(
    client: FlaskClient, password: str
) -> None:
    body = assert_error(register(client, password=password), 422)

    assert "password" in body["errors"]["json"]


def test_a_password_of_exactly_8_characters_is_accepted(client: FlaskClient) -> None:
    assert register(client, password="12345678").status_code == 201
    start_session(client, "carol", "12345678")


def test_an_absurdly_long_password_is_refused(client: FlaskClient) -> None:
    body = assert_error(register(client, password="x" * 257), 422)

    assert "password" in body["errors"]["json"]


@pytest.mark.parametrize(
    "email",
    ["not-an-email", "carol@", "@example.com", "carol@@example.com", "carol example@x.com", ""],
)
def test_an_invalid_email_is_refused(client: FlaskClient, email: str) -> None:
    body = assert_error(register(client, email=email), 422)

    assert "email" in body["errors"]["json"]


def test_the_email_is_stored_lower_case(client: FlaskClient) -> None:
    response = register(client, email="Carol.Smith@Example.COM")

    assert response.status_code == 201
    assert response.json["email"] == "carol.smith@example.com"


@pytest.mark.parametrize(
    "username",
    ["abc", "a" * 64, "Carol_99", "c.a-r_o.l", "xyz"],
    ids=["3-chars", "64-chars", "mixed", "punctuation", "letters"],
)
def test_a_username_of_3_to_64_characters_starting_with_a_letter_is_accepted(
    client: FlaskClient, username: str
) -> None:
    response = register(client, username=username)

    assert response.status_code == 201, response.json
    assert response.json["username"] == username.lower()


@pytest.mark.parametrize(
    "username",
    [
        "",
        "ab",
        "a" * 65,
        "1carol",
        "_carol",
        ".carol",
        "-carol",
        "car ol",
        "carol!",
        "carøl",
        "carol@x",
    ],
    ids=[
        "empty",
        "2-chars",
        "65-chars",
        "digit-first",
        "underscore-first",
        "dot-first",
        "dash-first",
        "space",
        "bang",
        "non-ascii",
        "at-sign",
    ],
)
def test_a_username_breaking_the_rules_is_refused(client: FlaskClient, username: str) -> None:
    body = assert_error(register(client, username=username), 422)

    assert "username" in body["errors"]["json"]


def test_usernames_are_stored_lower_case(client: FlaskClient) -> None:
    response = register(client, username="CaRoL")

    assert response.status_code == 201
    assert response.json["username"] == "carol"
    start_session(client, "carol", "s3cret-passphrase")


@pytest.mark.parametrize("username", ["carol", "CAROL", "Carol"])
def test_a_taken_username_is_refused_case_insensitively(client: FlaskClient, username: str) -> None:
    assert register(client).status_code == 201

    body = assert_error(register(client, username=username, email="other@example.com"), 409)

    assert set(body["errors"]["json"]) == {"username"}


@pytest.mark.parametrize("email", ["carol@example.com", "CAROL@EXAMPLE.COM", "Carol@Example.com"])
def test_an_email_another_account_has_is_accepted(
    app: APIFlask, client: FlaskClient, email: str
) -> None:
    """An address is contact information, not an identity: refusing a taken one would tell
    anyone whether it has an account here."""
    assert register(client).status_code == 201

    response = register(client, username="other", email=email)

    assert response.status_code == 201, response.json
    assert response.json["email"] == "carol@example.com"
    with app.app_context():
        emails = db.session.execute(select(User.username, User.email).order_by(User.id)).all()
    assert [tuple(row) for row in emails] == [
        ("carol", "carol@example.com"),
        ("other", "carol@example.com"),
    ]


def test_a_username_taken_by_an_existing_account_is_refused(
    client: FlaskClient, alice: Account
) -> None:
    body = assert_error(register(client, username="Alice", email="new@example.com"), 409)

    assert set(body["errors"]["json"]) == {"username"}


def test_a_refused_duplicate_registration_creates_nothing(
    app: APIFlask, client: FlaskClient
) -> None:
    assert register(client).status_code == 201
    assert register(client, username="CAROL", email="carol2@example.com").status_code == 409

    with app.app_context():
        assert db.session.scalars(select(User.username)).all() == ["carol"]


def test_registration_needs_a_json_body(client: FlaskClient) -> None:
    response = client.post("/register", data="username=carol", content_type="text/plain")

    assert_error(response, 415)


# --------------------------------------------------------------------------- POST /login


def test_login_returns_a_bearer_token_pair(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    response = client.post("/login", json={"username": "alice", "password": TEST_PASSWORD})

    assert response.status_code == 200
    body = response.json
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    ttl = app.config["SETTINGS"].access_token_ttl_seconds
    assert body["expires_in"] == ttl
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == ttl
    assert claims["sub"] == str(alice.id)
    assert claims["typ"] == "access"
    assert body["refresh_token"] != body["access_token"]
    assert client.get("/me", headers=bearer(body["access_token"])).status_code == 200


def test_login_is_case_insensitive_on_the_username(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "ALICE")

    assert client.get("/me", headers=session.headers).json["id"] == alice.id


def test_each_login_starts_a_new_session(client: FlaskClient, alice: Account) -> None:
    first = start_session(client, "alice")
    second = start_session(client, "alice")

    assert family_of(first.access_token) != family_of(second.access_token)
    assert first.refresh_token != second.refresh_token


def test_login_sets_last_login_at(app: APIFlask, client: FlaskClient, alice: Account) -> None:
    assert load_user(app, alice.id).last_login_at is None
    before = datetime.now(UTC)

    session = start_session(client, "alice")

    after = datetime.now(UTC)
    last_login = load_user(app, alice.id).last_login_at
    assert last_login is not None
    assert before - timedelta(seconds=1) <= last_login <= after + timedelta(seconds=1)
    me = client.get("/me", headers=session.headers).json
    assert me["last_login_at"] is not None


def test_a_failed_login_does_not_touch_last_login_at(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    response = client.post("/login", json={"username": "alice", "password": "wrong password"})

    assert response.status_code == 401
    assert load_user(app, alice.id).last_login_at is None


def test_a_wrong_password_and_an_unknown_user_get_identical_401_answers(
    client: FlaskClient, alice: Account
) -> None:
    wrong_password = client.post("/login", json={"username": "alice", "password": "not it at all"})
    unknown_user = client.post("/login", json={"username": "nobody", "password": "not it at all"})

    assert_unauthorized(wrong_password)
    assert_unauthorized(unknown_user)
    assert wrong_password.json == unknown_user.json
    assert wrong_password.headers["WWW-Authenticate"] == unknown_user.headers["WWW-Authenticate"]


def test_an_unknown_user_still_costs_one_argon2_verification(
    app: APIFlask, client: FlaskClient, alice: Account, verify_spy: list[tuple[str, str]]
) -> None:
    response = client.post("/login", json={"username": "nobody", "password": "guess-123"})

    assert_unauthorized(response)
    assert len(verify_spy) == 1
    dummy_hash, password = verify_spy[0]
    assert password == "guess-123"
    assert dummy_hash.startswith("$argon2id$")
    # The dummy hash is not some account's hash, and costs as much as a real one.
    real_hash = load_user(app, alice.id).password_hash
    assert real_hash is not None
    assert dummy_hash != real_hash
    assert argon2.extract_parameters(dummy_hash) == argon2.extract_parameters(real_hash)


def test_a_wrong_password_costs_exactly_one_argon2_verification_too(
    app: APIFlask, client: FlaskClient, alice: Account, verify_spy: list[tuple[str, str]]
) -> None:
    response = client.post("/login", json={"username": "alice", "password": "guess-123"})

    assert_unauthorized(response)
    assert verify_spy == [(load_user(app, alice.id).password_hash, "guess-123")]


def test_an_account_without_a_password_cannot_log_in_but_still_costs_a_verification(
    app: APIFlask, client: FlaskClient, alice: Account, verify_spy: list[tuple[str, str]]
) -> None:
    with app.app_context():
        db.session.execute(update(User).where(User.id == alice.id).values(password_hash=None))
        db.session.commit()

    response = client.post("/login", json={"username": "alice", "password": TEST_PASSWORD})

    assert_unauthorized(response)
    assert len(verify_spy) == 1
    assert verify_spy[0][0].startswith("$argon2id$")


def test_an_inactive_user_with_the_right_password_is_forbidden(
    client: FlaskClient, make_user: Callable[..., Account]
) -> None:
    make_user("dormant", is_active=False)

    response = client.post("/login", json={"username": "dormant", "password": TEST_PASSWORD})

    assert_error(response, 403)
    assert "access_token" not in response.json


def test_an_inactive_user_with_a_wrong_password_gets_the_usual_401(
    client: FlaskClient, make_user: Callable[..., Account], alice: Account
) -> None:
    make_user("dormant", is_active=False)

    inactive = client.post("/login", json={"username": "dormant", "password": "wrong password"})
    active = client.post("/login", json={"username": "alice", "password": "wrong password"})

    assert_unauthorized(inactive)
    assert inactive.json == active.json


def test_a_refused_login_of_an_inactive_user_starts_no_session(
    app: APIFlask, client: FlaskClient, make_user: Callable[..., Account]
) -> None:
    dormant = make_user("dormant", is_active=False)

    assert (
        client.post("/login", json={"username": "dormant", "password": TEST_PASSWORD}).status_code
        == 403
    )

    with app.app_context():
        assert (
            db.session.scalars(select(TokenFamily).where(TokenFamily.user_id == dormant.id)).all()
            == []
        )
    assert load_user(app, dormant.id).last_login_at is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "alice"},
        {"password": TEST_PASSWORD},
        {"username": "alice", "password": ""},
        {"username": "alice", "password": TEST_PASSWORD, "role": "admin"},
    ],
    ids=["empty", "no-password", "no-username", "empty-password", "extra-field"],
)
def test_a_malformed_login_body_is_refused(
    client: FlaskClient, alice: Account, body: dict[str, Any]
) -> None:
    assert_error(client.post("/login", json=body), 422)


def test_login_answers_never_contain_password_material(client: FlaskClient, alice: Account) -> None:
    for password in (TEST_PASSWORD, "wrong password"):
        response = client.post("/login", json={"username": "alice", "password": password})
        text = response.get_data(as_text=True)
        assert "$argon2" not in text
        assert "password_hash" not in text


# --------------------------------------------------------------------------- POST /token/refresh


def test_refreshing_returns_a_new_pair_in_the_same_session(
    client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")

    response = rotate(client, session.refresh_token)

    assert response.status_code == 200, response.json
    body = response.json
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"] != session.refresh_token
    assert body["access_token"] != session.access_token
    assert family_of(body["access_token"]) == family_of(session.access_token)
    me = client.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json["id"] == alice.id


def test_a_refresh_token_can_be_rotated_again_and_again(
    client: FlaskClient, alice: Account
) -> None:
    refresh_token = start_session(client, "alice").refresh_token
    for _ in range(3):
        response = rotate(client, refresh_token)
        assert response.status_code == 200
        refresh_token = response.json["refresh_token"]


def test_refreshing_spends_the_presented_refresh_token(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")
    assert refresh_row(app, session.refresh_token).used_at is None

    assert rotate(client, session.refresh_token).status_code == 200

    assert refresh_row(app, session.refresh_token).used_at is not None
    assert_unauthorized(rotate(client, session.refresh_token))


def test_refresh_tokens_are_stored_only_as_sha256_hashes(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")

    with app.app_context():
        stored = db.session.scalars(select(RefreshToken.token_hash)).all()
    assert stored == [hashlib.sha256(session.refresh_token.encode()).hexdigest()]
    assert session.refresh_token not in stored


def test_a_refresh_token_lives_for_the_configured_ttl(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")

    row = refresh_row(app, session.refresh_token)
    ttl = app.config["SETTINGS"].refresh_token_ttl_seconds
    assert row.expires_at - row.created_at == timedelta(seconds=ttl)


def test_reusing_a_spent_refresh_token_revokes_the_whole_family(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    first = start_session(client, "alice")
    rotated = rotate(client, first.refresh_token)
    assert rotated.status_code == 200
    second = Session(rotated.json["access_token"], rotated.json["refresh_token"])
    assert client.get("/me", headers=second.headers).status_code == 200

    # The spent token shows up again: someone copied it.
    assert_unauthorized(rotate(client, first.refresh_token))

    assert_unauthorized(rotate(client, second.refresh_token))
    assert_unauthorized(client.get("/me", headers=second.headers))
    assert_unauthorized(client.get("/me", headers=first.headers))
    with app.app_context():
        family = db.session.get(TokenFamily, family_of(first.access_token))
        assert family is not None
        assert family.revoked_at is not None
        assert family.revoked_reason == "reuse_detected"


def test_reuse_detection_leaves_the_users_other_sessions_alone(
    client: FlaskClient, alice: Account
) -> None:
    stolen = start_session(client, "alice")
    other = start_session(client, "alice")
    assert rotate(client, stolen.refresh_token).status_code == 200

    assert_unauthorized(rotate(client, stolen.refresh_token))

    assert client.get("/me", headers=other.headers).status_code == 200
    assert rotate(client, other.refresh_token).status_code == 200


def test_a_revoked_familys_unspent_refresh_token_cannot_be_used(
    client: FlaskClient, alice: Account
) -> None:
    first = start_session(client, "alice")
    second_refresh = rotate(client, first.refresh_token).json["refresh_token"]
    assert rotate(client, first.refresh_token).status_code == 401

    # Even presented again and again, the newer token stays dead.
    for _ in range(2):
        assert_unauthorized(rotate(client, second_refresh))


@pytest.mark.parametrize(
    "token",
    ["garbage", "x" * 43, "a" * 512],
    ids=["garbage", "token-sized", "max-length"],
)
def test_an_unknown_refresh_token_is_refused(
    client: FlaskClient, alice: Account, token: str
) -> None:
    start_session(client, "alice")

    assert_unauthorized(rotate(client, token))


def test_an_access_token_is_not_a_refresh_token(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    assert_unauthorized(rotate(client, session.access_token))
    # ...and trying did not hurt the session.
    assert client.get("/me", headers=session.headers).status_code == 200


def test_a_refresh_token_is_not_an_access_token(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    assert_unauthorized(client.get("/me", headers=bearer(session.refresh_token)))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"refresh_token": ""},
        {"refresh_token": "a" * 513},
        {"refresh_token": 123},
        {"refresh_token": "abc", "extra": 1},
    ],
    ids=["missing", "empty", "too-long", "not-a-string", "extra-field"],
)
def test_a_malformed_refresh_body_is_refused(client: FlaskClient, body: dict[str, Any]) -> None:
    assert_error(client.post("/token/refresh", json=body), 422)


def test_an_expired_refresh_token_is_refused(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")
    digest = hashlib.sha256(session.refresh_token.encode()).hexdigest()
    with app.app_context():
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == digest)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        db.session.commit()

    body = assert_unauthorized(rotate(client, session.refresh_token))

    assert "expired" in body["description"]


def test_a_refresh_token_is_refused_after_its_ttl_has_passed(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")
    row = refresh_row(app, session.refresh_token)
    # Move its whole life into the past, as if the ttl had run out.
    ttl = row.expires_at - row.created_at
    with app.app_context():
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == row.id)
            .values(created_at=row.created_at - ttl, expires_at=row.created_at)
        )
        db.session.commit()

    assert_unauthorized(rotate(client, session.refresh_token))


def test_a_refresh_token_of_a_deactivated_account_is_refused(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    """Deactivated behind the API's back (no admin call, so no family was revoked)."""
    session = start_session(client, "alice")
    with app.app_context():
        db.session.execute(update(User).where(User.id == alice.id).values(is_active=False))
        db.session.commit()

    assert_unauthorized(rotate(client, session.refresh_token))

    with app.app_context():
        family = db.session.get(TokenFamily, family_of(session.access_token))
        assert family is not None
        assert family.revoked_at is not None


# --------------------------------------------------------------------------- POST /logout


def test_logout_answers_204_with_no_body(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    response = client.post("/logout", headers=session.headers)

    assert response.status_code == 204
    assert response.get_data() == b""


def test_after_logout_the_same_access_token_is_refused_at_once(
    client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")
    assert client.get("/me", headers=session.headers).status_code == 200

    assert client.post("/logout", headers=session.headers).status_code == 204

    assert_unauthorized(client.get("/me", headers=session.headers))
    assert_unauthorized(client.post("/logout", headers=session.headers))


def test_after_logout_the_refresh_token_is_refused(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    assert client.post("/logout", headers=session.headers).status_code == 204

    assert_unauthorized(rotate(client, session.refresh_token))


def test_logout_revokes_every_token_of_the_session_including_rotated_ones(
    client: FlaskClient, alice: Account
) -> None:
    first = start_session(client, "alice")
    rotated = rotate(client, first.refresh_token).json
    second = Session(rotated["access_token"], rotated["refresh_token"])

    assert client.post("/logout", headers=second.headers).status_code == 204

    assert_unauthorized(client.get("/me", headers=first.headers))
    assert_unauthorized(rotate(client, second.refresh_token))


def test_logout_leaves_the_users_other_sessions_working(
    client: FlaskClient, alice: Account
) -> None:
    leaving = start_session(client, "alice")
    staying = start_session(client, "alice")

    assert client.post("/logout", headers=leaving.headers).status_code == 204

    assert client.get("/me", headers=staying.headers).status_code == 200
    assert rotate(client, staying.refresh_token).status_code == 200


def test_logout_leaves_other_users_sessions_working(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    alices = start_session(client, "alice")
    bobs = start_session(client, "bob")

    assert client.post("/logout", headers=alices.headers).status_code == 204

    assert client.get("/me", headers=bobs.headers).json["id"] == bob.id


def test_logout_needs_an_access_token(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    assert_unauthorized(client.post("/logout"))
    assert_unauthorized(client.post("/logout", headers=bearer(session.refresh_token)))
    assert client.get("/me", headers=session.headers).status_code == 200


def test_logout_records_the_reason(app: APIFlask, client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    assert client.post("/logout", headers=session.headers).status_code == 204

    with app.app_context():
        family = db.session.get(TokenFamily, family_of(session.access_token))
        assert family is not None
        assert family.revoked_at is not None
        assert family.revoked_reason == "logout"


# --------------------------------------------------------------------------- GET /me


def test_me_returns_the_callers_account(client: FlaskClient, alice: Account, bob: Account) -> None:
    response = client.get("/me", headers=start_session(client, "bob").headers)

    assert response.status_code == 200
    body = response.json
    assert body["id"] == bob.id
    assert body["username"] == "bob"
    assert body["email"] == "bob@example.com"
    assert body["role"] == "user"
    assert body["is_active"] is True
    assert_no_password_material(response)


def test_me_reports_the_role_from_the_database(
    client: FlaskClient, moderator: Account, admin: Account
) -> None:
    assert client.get("/me", headers=start_session(client, "mod_mary").headers).json["role"] == (
        "moderator"
    )
    assert client.get("/me", headers=start_session(client, "root_admin").headers).json["role"] == (
        "admin"
    )


def test_me_needs_an_access_token(client: FlaskClient) -> None:
    assert_unauthorized(client.get("/me"))


# --------------------------------------------------------------------------- PATCH /me


def test_changing_ones_email(app: APIFlask, client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    response = client.patch("/me", json={"email": "Alice.New@Example.com"}, headers=session.headers)

    assert response.status_code == 200, response.json
    assert response.json["email"] == "alice.new@example.com"
    assert_no_password_material(response)
    assert load_user(app, alice.id).email == "alice.new@example.com"
    assert client.get("/me", headers=session.headers).json["email"] == "alice.new@example.com"


def test_an_email_change_does_not_end_any_session(client: FlaskClient, alice: Account) -> None:
    current = start_session(client, "alice")
    other = start_session(client, "alice")

    assert (
        client.patch("/me", json={"email": "a2@example.com"}, headers=current.headers).status_code
        == 200
    )

    assert client.get("/me", headers=other.headers).status_code == 200
    assert rotate(client, other.refresh_token).status_code == 200


def test_keeping_ones_own_email_is_not_a_conflict(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    response = client.patch("/me", json={"email": "ALICE@example.com"}, headers=session.headers)

    assert response.status_code == 200
    assert response.json["email"] == "alice@example.com"


@pytest.mark.parametrize("email", ["bob@example.com", "BOB@Example.COM"])
def test_an_email_another_account_has_can_be_taken_on(
    app: APIFlask, client: FlaskClient, alice: Account, bob: Account, email: str
) -> None:
    """Not a 409: that would tell any account holder which addresses have an account."""
    session = start_session(client, "alice")

    response = client.patch("/me", json={"email": email}, headers=session.headers)

    assert response.status_code == 200, response.json
    assert response.json["email"] == "bob@example.com"
    assert load_user(app, alice.id).email == "bob@example.com"
    assert load_user(app, bob.id).email == "bob@example.com"


def test_an_invalid_email_change_is_refused(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    body = assert_error(client.patch("/me", json={"email": "nope"}, headers=session.headers), 422)

    assert "email" in body["errors"]["json"]


@pytest.mark.parametrize(
    "field,value",
    [("role", "admin"), ("is_active", True), ("username", "mallory"), ("id", 1)],
)
def test_me_refuses_fields_a_user_may_not_set(
    app: APIFlask, client: FlaskClient, alice: Account, field: str, value: object
) -> None:
    session = start_session(client, "alice")

    body = assert_error(client.patch("/me", json={field: value}, headers=session.headers), 422)

    assert field in body["errors"]["json"]
    user = load_user(app, alice.id)
    assert (user.role, user.username) == (Role.USER, "alice")


def test_a_password_change_needs_the_current_password(client: FlaskClient, alice: Account) -> None:
    session = start_session(client, "alice")

    body = assert_error(
        client.patch("/me", json={"password": NEW_PASSWORD}, headers=session.headers), 422
    )

    assert "current_password" in body["errors"]["json"]
    start_session(client, "alice", TEST_PASSWORD)  # unchanged
    assert (
        client.post("/login", json={"username": "alice", "password": NEW_PASSWORD}).status_code
        == 401
    )


def test_a_password_change_with_a_wrong_current_password_is_refused(
    client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")

    response = client.patch(
        "/me",
        json={"password": NEW_PASSWORD, "current_password": "not my password"},
        headers=session.headers,
    )

    assert_unauthorized(response)
    start_session(client, "alice", TEST_PASSWORD)  # unchanged
    assert (
        client.post("/login", json={"username": "alice", "password": NEW_PASSWORD}).status_code
        == 401
    )
    # A wrong current password is not a logout.
    assert client.get("/me", headers=session.headers).status_code == 200


def test_a_refused_password_change_changes_nothing_else_either(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")

    response = client.patch(
        "/me",
        json={
            "email": "sneaky@example.com",
            "password": NEW_PASSWORD,
            "current_password": "not my password",
        },
        headers=session.headers,
    )

    assert response.status_code == 401
    assert load_user(app, alice.id).email == "alice@example.com"


def test_a_new_password_shorter_than_8_characters_is_refused(
    client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")

    body = assert_error(
        client.patch(
            "/me",
            json={"password": "short", "current_password": TEST_PASSWORD},
            headers=session.headers,
        ),
        422,
    )

    assert "password" in body["errors"]["json"]


def test_after_a_password_change_only_the_new_password_logs_in(
    client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")

    response = client.patch(
        "/me",
        json={"password": NEW_PASSWORD, "current_password": TEST_PASSWORD},
        headers=session.headers,
    )

    assert response.status_code == 200, response.json
    assert_no_password_material(response)
    start_session(client, "alice", NEW_PASSWORD)
    assert_unauthorized(
        client.post("/login", json={"username": "alice", "password": TEST_PASSWORD})
    )


def test_a_password_change_signs_out_the_other_sessions_but_not_the_current_one(
    client: FlaskClient, alice: Account, bob: Account
) -> None:
    current = start_session(client, "alice")
    other = start_session(client, "alice")
    bobs = start_session(client, "bob")

    response = client.patch(
        "/me",
        json={"password": NEW_PASSWORD, "current_password": TEST_PASSWORD},
        headers=current.headers,
    )
    assert response.status_code == 200

    assert_unauthorized(client.get("/me", headers=other.headers))
    assert_unauthorized(rotate(client, other.refresh_token))
    assert client.get("/me", headers=current.headers).status_code == 200
    rotated = rotate(client, current.refresh_token)
    assert rotated.status_code == 200
    assert client.get("/me", headers=bearer(rotated.json["access_token"])).status_code == 200
    assert client.get("/me", headers=bobs.headers).status_code == 200


def test_an_empty_profile_change_changes_nothing(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    session = start_session(client, "alice")
    before = load_user(app, alice.id)

    response = client.patch("/me", json={}, headers=session.headers)

    assert response.status_code == 200
    after = load_user(app, alice.id)
    assert (after.email, after.password_hash) == (before.email, before.password_hash)


def test_me_changes_need_an_access_token(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    assert_unauthorized(client.patch("/me", json={"email": "x@example.com"}))
    assert load_user(app, alice.id).email == "alice@example.com"


# --------------------------------------------------------------------------- deactivation


def test_a_deactivated_users_still_valid_access_token_is_refused(
    client: FlaskClient, admin: Account, alice: Account
) -> None:
    session = start_session(client, "alice")
    admin_headers = start_session(client, "root_admin").headers
    assert client.get("/me", headers=session.headers).status_code == 200

    response = client.patch(
        f"/admin/users/{alice.id}", json={"is_active": False}, headers=admin_headers
    )
    assert response.status_code == 200, response.json
    assert response.json["is_active"] is False
    assert_no_password_material(response)

    assert_unauthorized(client.get("/me", headers=session.headers))
    assert_unauthorized(rotate(client, session.refresh_token))
    assert (
        client.post("/login", json={"username": "alice", "password": TEST_PASSWORD}).status_code
        == 403
    )


def test_deactivation_ends_every_session_of_the_user_and_only_theirs(
    client: FlaskClient, admin: Account, alice: Account, bob: Account
) -> None:
    first = start_session(client, "alice")
    second = start_session(client, "alice")
    bobs = start_session(client, "bob")
    admin_headers = start_session(client, "root_admin").headers

    assert (
        client.patch(
            f"/admin/users/{alice.id}", json={"is_active": False}, headers=admin_headers
        ).status_code
        == 200
    )

    for session in (first, second):
        assert_unauthorized(client.get("/me", headers=session.headers))
        assert_unauthorized(rotate(client, session.refresh_token))
    assert client.get("/me", headers=bobs.headers).status_code == 200
    assert client.get("/me", headers=admin_headers).status_code == 200


def test_reactivation_does_not_revive_old_sessions(
    client: FlaskClient, admin: Account, alice: Account
) -> None:
    session = start_session(client, "alice")
    admin_headers = start_session(client, "root_admin").headers
    url = f"/admin/users/{alice.id}"
    assert client.patch(url, json={"is_active": False}, headers=admin_headers).status_code == 200

    assert client.patch(url, json={"is_active": True}, headers=admin_headers).status_code == 200

    assert_unauthorized(client.get("/me", headers=session.headers))
    assert_unauthorized(rotate(client, session.refresh_token))
    fresh = start_session(client, "alice")
    assert client.get("/me", headers=fresh.headers).status_code == 200


def test_an_access_token_of_an_account_deactivated_behind_the_apis_back_is_refused(
    app: APIFlask, client: FlaskClient, alice: Account
) -> None:
    """Even when no family was revoked, an inactive account's tokens are refused."""
    session = start_session(client, "alice")
    with app.app_context():
        db.session.execute(update(User).where(User.id == alice.id).values(is_active=False))
        db.session.commit()

    assert_unauthorized(client.get("/me", headers=session.headers))
