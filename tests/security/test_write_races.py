"""Races that retries and parallel admins create (issue #25): admins demoting or deactivating each
other at the same moment, and one refresh token spent twice at once.

Each request runs in a thread of its own with its own test client (and so its own app context,
session and database connection), all released at once by a barrier (`race`). A lost race shows
only some of the time, so each race is run for `ROUNDS` rounds, from a clean set of accounts.

Every race runs on both backends. SQLite serialises writers, but not the read a write is decided
on: without the database's write lock taken before that read, two demotions there both counted
two admins and left none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from sqlalchemy import delete, select

from app.extensions import db
from app.models import RefreshToken, Role, TokenFamily, User
from tests.conftest import TEST_PASSWORD, Account
from tests.security.helpers import race

ROUNDS = 10
LAST_ADMIN = "cannot demote or deactivate the last active admin"
REUSE_DETECTED = "refresh token already used; the session has been revoked"

MakeUser = Callable[..., Account]
Login = Callable[[Account], dict[str, str]]


def _fresh_accounts(app: APIFlask) -> None:
    """Remove every account and session, so a round starts with only the admins it makes (the
    last-admin rule counts every active admin)."""
    with app.app_context():
        db.session.execute(delete(RefreshToken))
        db.session.execute(delete(TokenFamily))
        db.session.execute(delete(User))
        db.session.commit()


def _active_admins(app: APIFlask) -> set[str]:
    with app.app_context():
        try:
            names = db.session.scalars(
                select(User.username).where(User.role == Role.ADMIN, User.is_active.is_(True))
            ).all()
            return set(names)
        finally:
            db.session.remove()


def _patch_user(
    app: APIFlask, headers: dict[str, str], user_id: int, body: dict[str, Any]
) -> Callable[[], tuple[int, Any]]:
    def send() -> tuple[int, Any]:
        response = app.test_client().patch(f"/admin/users/{user_id}", json=body, headers=headers)
        return response.status_code, response.json

    return send


def _assert_refused_loser(status: int, body: Any, *, caller_lost: int) -> None:
    """The request that lost the race: refused by the last-admin rule (409), or, when it was
    authenticated only after the winner committed, refused because its caller had already lost
    what the winner took away (`caller_lost`: 403 when demoted, 401 when deactivated). Either way
    it changed nothing."""
    assert status in (409, caller_lost), (status, body)
    if status == 409:
        assert body["description"] == LAST_ADMIN, body


# --- parallel admins --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "caller_lost"),
    [({"role": "user"}, 403), ({"is_active": False}, 401)],
    ids=["demote", "deactivate"],
)
def test_two_admins_taking_each_others_rights_at_once_leave_one_admin(
    app: APIFlask,
    make_user: MakeUser,
    login: Login,
    change: dict[str, Any],
    caller_lost: int,
) -> None:
    outcomes: list[tuple[int, int]] = []
    for round_ in range(ROUNDS):
        _fresh_accounts(app)
        ann = make_user(f"ann{round_}", Role.ADMIN)
        ben = make_user(f"ben{round_}", Role.ADMIN)
        ann_headers, ben_headers = login(ann), login(ben)

        (ann_status, ann_body), (ben_status, ben_body) = race(
            [
                _patch_user(app, ann_headers, ben.id, change),
                _patch_user(app, ben_headers, ann.id, change),
            ]
        )
        outcomes.append((ann_status, ben_status))

        assert 200 in (ann_status, ben_status), (round_, ann_status, ann_body, ben_status, ben_body)
        if ann_status == 200:
            winner, loser_status, loser_body = ann, ben_status, ben_body
        else:
            winner, loser_status, loser_body = ben, ann_status, ann_body
        _assert_refused_loser(loser_status, loser_body, caller_lost=caller_lost)
        # Exactly one active admin is left: the winner, who changed the loser.
        assert _active_admins(app) == {winner.username}, (round_, outcomes)

    # The rule was exercised, not only the authentication: at least one loser got its 409.
    assert any(409 in pair for pair in outcomes), outcomes


def test_three_admins_each_demoting_the_next_at_once_keep_an_admin(
    app: APIFlask, make_user: MakeUser, login: Login
) -> None:
    """A cycle of demotions (ann -> ben -> cat -> ann): each is allowed on its own, all three
    together would leave no admin. At least one admin always remains, and every demotion that
    was answered 200 is one that happened."""
    for round_ in range(ROUNDS):
        _fresh_accounts(app)
        admins = [make_user(f"{name}{round_}", Role.ADMIN) for name in ("ann", "ben", "cat")]
        headers = [login(account) for account in admins]

        results = race(
            [
                _patch_user(app, headers[i], admins[(i + 1) % 3].id, {"role": "user"})
                for i in range(3)
            ]
        )

        statuses = [status for status, _body in results]
        remaining = _active_admins(app)
        assert remaining, (round_, results)
        demoted = {admins[(i + 1) % 3].username for i, s in enumerate(statuses) if s == 200}
        assert remaining == {a.username for a in admins} - demoted, (round_, results)
        for status, body in results:
            if status != 200:
                _assert_refused_loser(status, body, caller_lost=403)


def test_one_admin_demoting_two_of_three_at_once_leaves_one(
    app: APIFlask, make_user: MakeUser, login: Login
) -> None:
    """Two demotions that the rule allows together (three admins, two demoted) both apply."""
    for round_ in range(ROUNDS):
        _fresh_accounts(app)
        ann, ben, cat = (make_user(f"{n}{round_}", Role.ADMIN) for n in ("ann", "ben", "cat"))
        headers = login(ann)

        results = race(
            [
                _patch_user(app, headers, ben.id, {"role": "user"}),
                _patch_user(app, headers, cat.id, {"role": "user"}),
            ]
        )

        assert [status for status, _body in results] == [200, 200], (round_, results)
        assert _active_admins(app) == {ann.username}


def test_a_demotion_sent_twice_at_once_is_done_once_and_answered_200_twice(
    app: APIFlask, make_user: MakeUser, login: Login
) -> None:
    """A client retrying a demotion whose answer it lost, while the first try is still running:
    the retry finds the demotion done and answers 200 as well, it is not refused as the demotion
    of a last admin that the account no longer is."""
    for round_ in range(ROUNDS):
        _fresh_accounts(app)
        ann = make_user(f"ann{round_}", Role.ADMIN)
        ben = make_user(f"ben{round_}", Role.ADMIN)
        headers = login(ann)

        results = race([_patch_user(app, headers, ben.id, {"role": "user"})] * 2)

        assert [status for status, _body in results] == [200, 200], (round_, results)
        assert all(body["role"] == "user" for _status, body in results), results
        assert _active_admins(app) == {ann.username}


# --- one refresh token spent twice ------------------------------------------------------------


def _log_in(client: FlaskClient, account: Account) -> dict[str, Any]:
    response = client.post("/login", json={"username": account.username, "password": TEST_PASSWORD})
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json
    return body


def _bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def _refresh(app: APIFlask, refresh_token: str) -> Callable[[], tuple[int, Any]]:
    def send() -> tuple[int, Any]:
        response = app.test_client().post("/token/refresh", json={"refresh_token": refresh_token})
        return response.status_code, response.json

    return send


def _assert_session_revoked(
    client: FlaskClient, first: dict[str, Any], new: dict[str, Any]
) -> None:
    """Reuse was detected, so the whole session (token family) is revoked: the new pair's refresh
    token and access token are refused, and so is the first access token. The revocation bumps
    the user's auth counter before the revoking request answers (docs/ARCHITECTURE.md,
    "Sessions"), so the session memory of this process, warmed by the first access token, is not
    trusted any more: no wait is needed."""
    again = client.post("/token/refresh", json={"refresh_token": new["refresh_token"]})
    assert again.status_code == 401, again.json
    assert client.get("/me", headers=_bearer(new)).status_code == 401
    assert client.get("/me", headers=_bearer(first)).status_code == 401


def test_two_refreshes_of_one_token_at_once_give_one_pair_and_revoke_the_session(
    app: APIFlask, client: FlaskClient, make_user: MakeUser
) -> None:
    for round_ in range(ROUNDS):
        user = make_user(f"dan{round_}")
        first = _log_in(client, user)
        # Remembered as a live session by this process before the race.
        assert client.get("/me", headers=_bearer(first)).status_code == 200

        results = race([_refresh(app, first["refresh_token"])] * 2)

        statuses = sorted(status for status, _body in results)
        assert statuses == [200, 401], (round_, results)
        new = next(body for status, body in results if status == 200)
        refused = next(body for status, body in results if status == 401)
        assert refused["description"] == REUSE_DETECTED, refused
        assert new["refresh_token"] != first["refresh_token"]
        _assert_session_revoked(client, first, new)
        with app.app_context():
            family = db.session.scalars(
                select(TokenFamily).join(User).where(User.username == user.username)
            ).one()
            assert family.revoked_reason == "reuse_detected"
            db.session.remove()


def test_a_refresh_token_spent_twice_in_a_row_revokes_the_session(
    client: FlaskClient, make_user: MakeUser
) -> None:
    """The sequential form of the race: a client retrying a refresh whose answer it lost."""
    first = _log_in(client, make_user("eve"))
    assert client.get("/me", headers=_bearer(first)).status_code == 200

    rotated = client.post("/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200, rotated.json
    new = rotated.json
    assert client.get("/me", headers=_bearer(new)).status_code == 200

    replay = client.post("/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401, replay.json
    assert replay.json["description"] == REUSE_DETECTED

    _assert_session_revoked(client, first, new)
