"""Admin endpoints: the dashboard figures, the user list and changes to accounts."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from urllib.parse import parse_qs, urlsplit

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Role, Task, TaskPriority, TaskStatus, User
from tests.conftest import Account

Headers = dict[str, str]
Login = Callable[[Account], Headers]
MakeUser = Callable[..., Account]
MakeTask = Callable[..., int]


def _start_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _links(header: str) -> dict[str, int]:
    """rel -> page number of an RFC 8288 Link header."""
    pages: dict[str, int] = {}
    for url, rel in re.findall(r'<([^>]+)>;\s*rel="([^"]+)"', header):
        pages[rel] = int(parse_qs(urlsplit(url).query)["page"][0])
    return pages


@pytest.fixture
def make_task(app: APIFlask) -> MakeTask:
    """Insert a task row directly, with any created_at / deleted_at."""

    def _make(
        creator: Account,
        *,
        status: TaskStatus = TaskStatus.ACTIVE,
        priority: TaskPriority = TaskPriority.MEDIUM,
        created_at: datetime | None = None,
        deleted: bool = False,
    ) -> int:
        with app.app_context():
            now = datetime.now(UTC)
            task = Task(
                task_name="seeded",
                status=status,
                priority=priority,
                created_by_id=creator.id,
                created_at=created_at or now,
                deleted_at=now if deleted else None,
            )
            db.session.add(task)
            db.session.commit()
            return task.id

    return _make


# --- GET /admin/dashboard -------------------------------------------------------------------


def test_dashboard_is_admin_only(
    client: FlaskClient, admin: Account, moderator: Account, alice: Account, login: Login
) -> None:
    assert client.get("/admin/dashboard").status_code == 401
    assert client.get("/admin/dashboard", headers=login(moderator)).status_code == 403
    assert client.get("/admin/dashboard", headers=login(alice)).status_code == 403
    assert client.get("/admin/dashboard", headers=login(admin)).status_code == 200


def test_dashboard_counts_users_by_role_and_live_tasks_by_status_and_priority(
    client: FlaskClient,
    admin: Account,
    moderator: Account,
    alice: Account,
    bob: Account,
    make_task: MakeTask,
    login: Login,
) -> None:
    make_task(alice, status=TaskStatus.ACTIVE, priority=TaskPriority.HIGH)
    make_task(alice, status=TaskStatus.ACTIVE, priority=TaskPriority.HIGH)
    make_task(bob, status=TaskStatus.INACTIVE, priority=TaskPriority.LOW)
    make_task(bob, status=TaskStatus.ACTIVE, priority=TaskPriority.CRITICAL)
    # Soft-deleted tasks are counted apart, never in the status/priority figures.
    make_task(bob, status=TaskStatus.INACTIVE, priority=TaskPriority.MEDIUM, deleted=True)
    make_task(alice, status=TaskStatus.ACTIVE, priority=TaskPriority.HIGH, deleted=True)

    response = client.get("/admin/dashboard", headers=login(admin))

    assert response.status_code == 200
    body = response.json
    assert body["users_by_role"] == {"admin": 1, "moderator": 1, "user": 2}
    assert body["tasks_by_status"] == {"active": 3, "inactive": 1}
    assert body["tasks_by_priority"] == {"LOW": 1, "MEDIUM": 0, "HIGH": 2, "CRITICAL": 1}
    assert body["soft_deleted_tasks"] == 2


def test_dashboard_on_an_empty_database_reports_zeros(
    client: FlaskClient, admin: Account, login: Login
) -> None:
    body = client.get("/admin/dashboard", headers=login(admin)).json

    assert body["users_by_role"] == {"admin": 1, "moderator": 0, "user": 0}
    assert body["tasks_by_status"] == {"active": 0, "inactive": 0}
    assert body["tasks_by_priority"] == {"LOW": 0, "MEDIUM": 0, "HIGH": 0, "CRITICAL": 0}
    assert body["soft_deleted_tasks"] == 0
    assert [day["count"] for day in body["tasks_created_per_day"]] == [0] * 14


def test_dashboard_tasks_created_per_day_covers_the_last_14_utc_days_with_zeros_filled(
    client: FlaskClient, admin: Account, alice: Account, make_task: MakeTask, login: Login
) -> None:
    today = datetime.now(UTC).date()
    first = today - timedelta(days=13)
    seeded = {
        today: [_start_of_day(today), _start_of_day(today) + timedelta(hours=1)],
        today - timedelta(days=1): [_start_of_day(today) - timedelta(microseconds=1)],
        today - timedelta(days=5): [_start_of_day(today - timedelta(days=5)) + timedelta(hours=12)],
        first: [_start_of_day(first), _start_of_day(first) + timedelta(hours=23, minutes=59)],
    }
    for created in seeded.values():
        for created_at in created:
            make_task(alice, created_at=created_at)
    # Soft-deleted tasks were created too: they count on their creation day.
    make_task(alice, created_at=_start_of_day(today - timedelta(days=5)), deleted=True)
    # Outside the window: the day before the first day, and a week before that.
    make_task(alice, created_at=_start_of_day(first) - timedelta(seconds=1))
    make_task(alice, created_at=_start_of_day(first) - timedelta(days=7))
    headers = login(admin)

    response = client.get("/admin/dashboard", headers=headers)
    after = datetime.now(UTC).date()

    assert response.status_code == 200
    per_day = response.json["tasks_created_per_day"]
    assert len(per_day) == 14
    dates = [date.fromisoformat(entry["date"]) for entry in per_day]
    assert dates == sorted(dates), "oldest first"
    assert all(b - a == timedelta(days=1) for a, b in pairwise(dates))
    assert dates[-1] in (today, after), "ends today (UTC)"
    if after != today:  # pragma: no cover - the test straddled midnight UTC
        pytest.skip("UTC midnight passed during the test")
    expected = {day: 0 for day in dates}
    for day, created in seeded.items():
        expected[day] += len(created)
    expected[today - timedelta(days=5)] += 1
    assert {date.fromisoformat(e["date"]): e["count"] for e in per_day} == expected
    assert sum(e["count"] for e in per_day) == 7


# --- GET /admin/users -----------------------------------------------------------------------


def test_user_list_is_admin_only(
    client: FlaskClient, moderator: Account, alice: Account, login: Login
) -> None:
    assert client.get("/admin/users").status_code == 401
    assert client.get("/admin/users", headers=login(moderator)).status_code == 403
    assert client.get("/admin/users", headers=login(alice)).status_code == 403


def test_user_list_is_paginated_with_link_header_and_never_shows_password_hashes(
    client: FlaskClient, admin: Account, make_user: MakeUser, login: Login
) -> None:
    for i in range(4):
        make_user(f"member{i}")
    headers = login(admin)

    first = client.get("/admin/users?per_page=2", headers=headers)
    second = client.get("/admin/users?per_page=2&page=2", headers=headers)
    last = client.get("/admin/users?per_page=2&page=3", headers=headers)

    assert first.status_code == second.status_code == last.status_code == 200
    assert (first.json["total"], first.json["pages"], first.json["per_page"]) == (5, 3, 2)
    assert [u["username"] for u in first.json["items"]] == ["root_admin", "member0"]
    assert [u["username"] for u in second.json["items"]] == ["member1", "member2"]
    assert [u["username"] for u in last.json["items"]] == ["member3"]
    assert _links(first.headers["Link"]) == {"first": 1, "next": 2, "last": 3}
    assert _links(second.headers["Link"]) == {"first": 1, "prev": 1, "next": 3, "last": 3}
    assert _links(last.headers["Link"]) == {"first": 1, "prev": 2, "last": 3}
    assert "per_page=2" in first.headers["Link"]
    for response in (first, second, last):
        assert "password" not in response.get_data(as_text=True)
        for user in response.json["items"]:
            assert set(user) >= {"id", "username", "email", "role", "is_active"}
            assert "password_hash" not in user


def test_user_list_filters_by_role_and_active_flag(
    client: FlaskClient,
    admin: Account,
    moderator: Account,
    alice: Account,
    make_user: MakeUser,
    login: Login,
) -> None:
    make_user("dormant", is_active=False)
    make_user("retired_mod", Role.MODERATOR, is_active=False)
    headers = login(admin)

    def usernames(query: str) -> list[str]:
        response = client.get(f"/admin/users?{query}", headers=headers)
        assert response.status_code == 200, response.json
        return [u["username"] for u in response.json["items"]]

    assert usernames("role=moderator") == ["mod_mary", "retired_mod"]
    assert usernames("role=user") == ["alice", "dormant"]
    assert usernames("is_active=false") == ["dormant", "retired_mod"]
    assert usernames("is_active=true") == ["root_admin", "mod_mary", "alice"]
    assert usernames("role=moderator&is_active=true") == ["mod_mary"]
    assert usernames("role=admin&is_active=false") == []
    filtered = client.get("/admin/users?role=user&per_page=1", headers=headers)
    assert filtered.json["total"] == 2
    assert "role=user" in filtered.headers["Link"]


def test_user_list_rejects_bad_query_parameters(
    client: FlaskClient, admin: Account, login: Login
) -> None:
    headers = login(admin)
    for query in ("role=overlord", "is_active=maybe", "per_page=0", "per_page=101", "page=0"):
        response = client.get(f"/admin/users?{query}", headers=headers)
        assert response.status_code == 422, query
        assert "query" in response.json["errors"]


# --- PATCH /admin/users/<id> ----------------------------------------------------------------


def test_patch_user_is_admin_only(
    client: FlaskClient, moderator: Account, alice: Account, login: Login
) -> None:
    url = f"/admin/users/{alice.id}"
    assert client.patch(url, json={"role": "moderator"}).status_code == 401
    as_moderator = client.patch(url, json={"role": "moderator"}, headers=login(moderator))
    assert as_moderator.status_code == 403
    assert client.patch(url, json={"role": "admin"}, headers=login(alice)).status_code == 403


def test_patch_unknown_user_is_404(client: FlaskClient, admin: Account, login: Login) -> None:
    response = client.patch("/admin/users/999999", json={"role": "user"}, headers=login(admin))

    assert response.status_code == 404
    assert response.json["code"] == 404


@pytest.mark.parametrize(
    "body",
    [
        {"username": "renamed"},
        {"role": "user", "password_hash": "x"},
        {"id": 1},
        {"role": "superuser"},
        {"is_active": "perhaps"},
        {"password": "short"},
    ],
)
def test_patch_user_rejects_unknown_fields_and_bad_values(
    client: FlaskClient, admin: Account, alice: Account, login: Login, body: dict[str, object]
) -> None:
    response = client.patch(f"/admin/users/{alice.id}", json=body, headers=login(admin))

    assert response.status_code == 422
    assert "json" in response.json["errors"]
    unchanged = client.get("/admin/users?role=user", headers=login(admin)).json["items"]
    assert [(u["username"], u["is_active"]) for u in unchanged] == [("alice", True)]


def test_patch_changes_role_and_active_flag(
    client: FlaskClient, admin: Account, alice: Account, login: Login
) -> None:
    headers = login(admin)

    promoted = client.patch(f"/admin/users/{alice.id}", json={"role": "moderator"}, headers=headers)
    assert promoted.status_code == 200
    assert (promoted.json["role"], promoted.json["is_active"]) == ("moderator", True)
    assert "password_hash" not in promoted.json

    disabled = client.patch(f"/admin/users/{alice.id}", json={"is_active": False}, headers=headers)
    assert disabled.status_code == 200
    assert (disabled.json["role"], disabled.json["is_active"]) == ("moderator", False)

    listed = client.get("/admin/users?is_active=false", headers=headers).json["items"]
    assert [(u["id"], u["role"]) for u in listed] == [(alice.id, "moderator")]


def test_last_active_admin_can_be_neither_demoted_nor_deactivated(
    client: FlaskClient, admin: Account, make_user: MakeUser, login: Login
) -> None:
    make_user("old_admin", Role.ADMIN, is_active=False)  # an inactive admin does not count
    headers = login(admin)
    url = f"/admin/users/{admin.id}"

    for body in (
        {"role": "user"},
        {"role": "moderator"},
        {"is_active": False},
        {"role": "user", "is_active": False},
    ):
        response = client.patch(url, json=body, headers=headers)
        assert response.status_code == 409, body
        assert response.json["code"] == 409
        assert "last active admin" in response.json["description"]

    still = client.get("/admin/users?role=admin&is_active=true", headers=headers)
    assert [u["id"] for u in still.json["items"]] == [admin.id]
    # Harmless changes to the last admin are allowed.
    assert (
        client.patch(url, json={"role": "admin", "is_active": True}, headers=headers).status_code
        == 200
    )


def test_an_admin_can_be_demoted_or_deactivated_when_another_active_admin_exists(
    client: FlaskClient, admin: Account, make_user: MakeUser, login: Login
) -> None:
    second = make_user("second_admin", Role.ADMIN)
    third = make_user("third_admin", Role.ADMIN)
    headers = login(admin)

    demoted = client.patch(f"/admin/users/{second.id}", json={"role": "user"}, headers=headers)
    assert demoted.status_code == 200
    assert demoted.json["role"] == "user"

    deactivated = client.patch(
        f"/admin/users/{third.id}", json={"is_active": False}, headers=headers
    )
    assert deactivated.status_code == 200
    assert deactivated.json["is_active"] is False

    # Now root_admin is the last one standing.
    last = client.patch(f"/admin/users/{admin.id}", json={"role": "user"}, headers=headers)
    assert last.status_code == 409


def test_an_admin_may_demote_themselves_when_another_admin_remains(
    client: FlaskClient, admin: Account, make_user: MakeUser, login: Login
) -> None:
    make_user("successor", Role.ADMIN)
    headers = login(admin)

    response = client.patch(f"/admin/users/{admin.id}", json={"role": "moderator"}, headers=headers)

    assert response.status_code == 200
    # The role is read from the database on every request: the demotion applies at once.
    assert client.get("/admin/dashboard", headers=headers).status_code == 403


def test_an_admin_may_give_a_user_an_address_another_account_has(
    client: FlaskClient, admin: Account, alice: Account, bob: Account, login: Login
) -> None:
    """Addresses are contact information, not unique: e.g. the real address of an account
    created by a CSV import, which its owner may also have registered with."""
    headers = login(admin)

    response = client.patch(
        f"/admin/users/{alice.id}", json={"email": "Bob@Example.com"}, headers=headers
    )

    assert response.status_code == 200, response.json
    assert response.json["email"] == "bob@example.com"
    listed = client.get("/admin/users", headers=headers).json["items"]
    emails = {u["username"]: u["email"] for u in listed}
    assert (emails["alice"], emails["bob"]) == ("bob@example.com", "bob@example.com")


def test_setting_a_password_lets_the_user_log_in_with_it(
    app: APIFlask, client: FlaskClient, admin: Account, login: Login
) -> None:
    with app.app_context():  # an account without a password, as a CSV import creates them
        user = User(
            username="imported",
            email="imported@example.com",
            password_hash=None,
            role=Role.USER,
            is_active=True,
        )
        db.session.add(user)
        db.session.commit()
        user_id = user.id
    new_password = "brand new passphrase"
    assert (
        client.post("/login", json={"username": "imported", "password": new_password}).status_code
        == 401
    )

    response = client.patch(
        f"/admin/users/{user_id}", json={"password": new_password}, headers=login(admin)
    )

    assert response.status_code == 200
    assert new_password not in response.get_data(as_text=True)
    assert "password_hash" not in response.json
    tokens = client.post("/login", json={"username": "imported", "password": new_password})
    assert tokens.status_code == 200
    me = client.get("/me", headers={"Authorization": f"Bearer {tokens.json['access_token']}"})
    assert me.json["username"] == "imported"


def test_resetting_a_password_replaces_the_old_one_and_ends_its_sessions(
    client: FlaskClient, admin: Account, alice: Account, login: Login
) -> None:
    alice_headers = login(alice)

    response = client.patch(
        f"/admin/users/{alice.id}", json={"password": "reset by the admin"}, headers=login(admin)
    )

    assert response.status_code == 200
    assert client.get("/me", headers=alice_headers).status_code == 401
    old = client.post("/login", json={"username": "alice", "password": alice.password})
    assert old.status_code == 401
    new = client.post("/login", json={"username": "alice", "password": "reset by the admin"})
    assert new.status_code == 200


def test_deactivating_a_user_invalidates_their_existing_token(
    client: FlaskClient, admin: Account, alice: Account, login: Login
) -> None:
    alice_headers = login(alice)
    assert client.get("/me", headers=alice_headers).status_code == 200

    response = client.patch(
        f"/admin/users/{alice.id}", json={"is_active": False}, headers=login(admin)
    )

    assert response.status_code == 200
    revoked = client.get("/me", headers=alice_headers)
    assert revoked.status_code == 401
    assert revoked.json["code"] == 401
    assert client.get("/tasks", headers=alice_headers).status_code == 401
    # Nor can they start a new session until reactivated.
    assert (
        client.post("/login", json={"username": "alice", "password": alice.password}).status_code
        == 403
    )
    client.patch(f"/admin/users/{alice.id}", json={"is_active": True}, headers=login(admin))
    assert client.get("/me", headers=login(alice)).status_code == 200
