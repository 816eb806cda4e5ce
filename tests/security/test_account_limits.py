"""Account endpoints and rate limits (issue #23, findings 6 and 7, and the per-caller limit).

- `PATCH /me` is limited per user: each wrong current password costs an argon2 check.
- Whether an email address has an account is not revealed: a taken address is accepted like a
  free one (addresses are contact information, not identities; logins are by username).
- Failed logins are limited per (address, username) and, more loosely, per username from any
  address; correct logins and refused (429) attempts are not counted, so an attacker at one
  address cannot keep a user out who logs in from another.
- Every caller has one budget over all endpoints (RATELIMIT_DEFAULT), per user for a valid
  token, else per address; probes, /metrics and static files are outside it.

Apps here are built with limits on, on the `app` fixture's database, with in-memory counts (the
counts through Redis are in tests/api/test_rate_limits.py). Client addresses are fake WSGI
`REMOTE_ADDR` values of the in-process test client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.auth.tokens import issue_access_token
from tests.conftest import TEST_PASSWORD, Account, MakeApp

WRONG_PASSWORD = "not the password"

Headers = dict[str, str]


@pytest.fixture
def make_app(make_app: MakeApp) -> MakeApp:
    """The shared fixture's apps, with limits on."""
    return functools.partial(make_app, ratelimit_enabled=True)


def login_from(
    client: FlaskClient, address: str, username: str, password: str = WRONG_PASSWORD
) -> TestResponse:
    return client.post(
        "/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def logged_in(client: FlaskClient, account: Account, address: str = "10.9.9.9") -> Headers:
    response = login_from(client, address, account.username, account.password)
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def patch_me_from(
    client: FlaskClient, address: str, headers: Headers, body: dict[str, Any]
) -> TestResponse:
    return client.patch("/me", json=body, headers=headers, environ_base={"REMOTE_ADDR": address})


def get_from(client: FlaskClient, address: str, url: str, headers: Headers | None = None) -> int:
    return client.get(url, headers=headers or {}, environ_base={"REMOTE_ADDR": address}).status_code


def assert_limited(response: TestResponse, window_seconds: int = 60) -> None:
    """A 429 in the one JSON error shape, with a Retry-After within the limit's window."""
    assert response.status_code == 429, response.json
    assert response.headers["Content-Type"] == "application/json"
    assert response.json is not None
    assert set(response.json) == {"code", "message", "description"}
    assert response.json["code"] == 429
    assert response.json["message"] == "Too Many Requests"
    assert 0 < int(response.headers["Retry-After"]) <= window_seconds


# --------------------------------------------------------------------------- PATCH /me


def test_patch_me_is_limited_per_user(make_app: MakeApp, alice: Account, bob: Account) -> None:
    client = make_app(ratelimit_profile="3/minute").test_client()
    alice_headers, bob_headers = logged_in(client, alice), logged_in(client, bob)
    wrong = {"password": "a brand new passphrase", "current_password": WRONG_PASSWORD}

    assert patch_me_from(client, "10.1.0.1", alice_headers, wrong).status_code == 401
    assert patch_me_from(client, "10.1.0.1", alice_headers, wrong).status_code == 401
    email = {"email": "alice.new@example.com"}
    assert patch_me_from(client, "10.1.0.1", alice_headers, email).status_code == 200

    # The fourth call in the window, from anywhere, even with the right password: refused.
    right = {"password": "a brand new passphrase", "current_password": TEST_PASSWORD}
    assert_limited(patch_me_from(client, "10.1.0.2", alice_headers, right))
    # Other users are not, and alice's other requests are not either.
    assert patch_me_from(client, "10.1.0.1", bob_headers, email).status_code == 200
    assert get_from(client, "10.1.0.1", "/me", alice_headers) == 200


# --------------------------------------------------------------------------- login lockout


def test_a_lockout_from_one_address_does_not_keep_the_user_out_of_another(
    make_app: MakeApp, alice: Account
) -> None:
    """The default settings: 10 failed logins a minute per (address, username), 100 an hour per
    username."""
    client = make_app().test_client()

    attack = [login_from(client, "127.0.0.2", alice.username).status_code for _ in range(15)]

    assert attack == [401] * 10 + [429] * 5
    assert login_from(client, "127.0.0.3", alice.username, TEST_PASSWORD).status_code == 200


def test_one_address_gets_only_a_share_of_a_usernames_failed_logins(
    make_app: MakeApp, alice: Account
) -> None:
    """Over the per-username limit's window (an hour), one address may fail a quarter of its
    allowance, however many attempts its per-minute limit would let through: it can never fill
    the per-username limit alone."""
    client = make_app(
        ratelimit_auth="100/minute", ratelimit_login_per_username="8/hour"
    ).test_client()

    attack = [login_from(client, "127.0.0.2", alice.username) for _ in range(6)]

    assert [r.status_code for r in attack] == [401, 401] + [429] * 4
    assert_limited(attack[-1], window_seconds=3600)
    assert login_from(client, "127.0.0.3", alice.username, TEST_PASSWORD).status_code == 200


def test_refused_attempts_do_not_count_toward_the_username_limit(
    make_app: MakeApp, alice: Account
) -> None:
    client = make_app(
        ratelimit_auth="100/minute", ratelimit_login_per_username="12/hour"
    ).test_client()

    # One address: 3 failures (its share), then 17 refusals, which count for nothing.
    attack = [login_from(client, "10.2.0.1", alice.username).status_code for _ in range(20)]
    assert attack == [401] * 3 + [429] * 17

    # So three more addresses still get their 3 failures each before the username is full.
    for address in ("10.2.0.2", "10.2.0.3", "10.2.0.4"):
        statuses = [login_from(client, address, alice.username).status_code for _ in range(3)]
        assert statuses == [401] * 3, address
    assert_limited(
        login_from(client, "10.2.0.5", alice.username, TEST_PASSWORD), window_seconds=3600
    )


def test_a_failed_login_flood_from_many_addresses_reaches_the_username_limit(
    make_app: MakeApp, alice: Account, bob: Account
) -> None:
    client = make_app(ratelimit_login_per_username="5/hour").test_client()
    for n in range(5):
        assert login_from(client, f"10.3.0.{n + 1}", alice.username).status_code == 401

    # A sixth address, even with the right password and any spelling of the name: refused.
    assert_limited(
        login_from(client, "10.3.0.99", alice.username, TEST_PASSWORD), window_seconds=3600
    )
    assert login_from(client, "10.3.0.98", f" {alice.username.upper()} ").status_code == 429
    # Another account is not.
    assert login_from(client, "10.3.0.97", bob.username, TEST_PASSWORD).status_code == 200


def test_a_correct_login_is_not_counted_toward_the_username_limits(
    make_app: MakeApp, alice: Account
) -> None:
    client = make_app(
        ratelimit_auth="3/minute", ratelimit_login_per_username="3/hour"
    ).test_client()

    correct = [
        login_from(client, f"10.4.0.{n + 1}", alice.username, TEST_PASSWORD).status_code
        for n in range(5)
    ]
    assert correct == [200] * 5

    # Failed ones are.
    for n in range(3):
        assert login_from(client, f"10.4.1.{n + 1}", alice.username).status_code == 401
    assert login_from(client, "10.4.2.1", alice.username, TEST_PASSWORD).status_code == 429


def test_ipv6_clients_are_counted_by_their_64_network(make_app: MakeApp) -> None:
    """One subscriber's /64 is one client: it cannot get a fresh allowance per address."""
    client = make_app(ratelimit_auth="3/minute").test_client()
    for n in range(3):
        assert login_from(client, f"2001:db8:1:2::{n + 1}", f"user{n}").status_code == 401

    assert login_from(client, "2001:db8:1:2:ffff::9", "someone").status_code == 429
    assert login_from(client, "2001:db8:1:3::1", "someone").status_code == 401


# --------------------------------------------------------------------------- per-caller limit


def test_the_per_caller_limit_is_on_by_default_over_all_endpoints(
    make_app: MakeApp, alice: Account
) -> None:
    client = make_app().test_client()
    headers = logged_in(client, alice)

    tasks = client.get("/tasks", headers=headers)
    me = client.get("/me", headers=headers)

    assert (tasks.headers["X-RateLimit-Limit"], me.headers["X-RateLimit-Limit"]) == ("1200",) * 2
    # One budget for both endpoints.
    assert int(me.headers["X-RateLimit-Remaining"]) == (
        int(tasks.headers["X-RateLimit-Remaining"]) - 1
    )


def test_the_per_caller_limit_counts_a_user_wherever_they_call_from(
    make_app: MakeApp, alice: Account, bob: Account
) -> None:
    client = make_app(ratelimit_default="4/minute").test_client()
    alice_headers, bob_headers = logged_in(client, alice), logged_in(client, bob)

    assert get_from(client, "10.5.0.1", "/tasks", alice_headers) == 200
    assert get_from(client, "10.5.0.1", "/me", alice_headers) == 200
    created = client.post("/task", json={"task_name": "t"}, headers=alice_headers)
    assert created.status_code == 201
    assert patch_me_from(client, "10.5.0.2", alice_headers, {"email": "a@x.org"}).status_code == 200

    assert_limited(
        client.get("/tasks", headers=alice_headers, environ_base={"REMOTE_ADDR": "10.5.0.3"})
    )
    assert get_from(client, "10.5.0.3", "/tasks", bob_headers) == 200
    # Anonymous callers count by address: this one has its own budget.
    assert login_from(client, "10.5.0.3", "nobody").status_code == 401


def test_the_per_caller_limit_covers_the_endpoints_with_limits_of_their_own(
    make_app: MakeApp, alice: Account
) -> None:
    """Login, registration and refresh, per address: their own limits are far from full here."""
    client = make_app(ratelimit_default="3/minute", ratelimit_auth="100/minute").test_client()
    address = {"REMOTE_ADDR": "10.6.0.1"}
    body = {"username": "carol", "email": "carol@example.com", "password": TEST_PASSWORD}

    assert client.post("/register", json=body, environ_base=address).status_code == 201
    pair = login_from(client, "10.6.0.1", alice.username, TEST_PASSWORD)
    assert pair.status_code == 200
    refresh = {"refresh_token": pair.json["refresh_token"]}
    assert client.post("/token/refresh", json=refresh, environ_base=address).status_code == 200

    assert_limited(login_from(client, "10.6.0.1", alice.username, TEST_PASSWORD))
    assert login_from(client, "10.6.0.2", alice.username, TEST_PASSWORD).status_code == 200


def test_a_forged_token_counts_against_its_address_not_the_user_it_names(
    make_app: MakeApp, alice: Account
) -> None:
    """The user id of an unverified token is not trusted: anyone could spend anyone's budget."""
    client = make_app(ratelimit_default="3/minute").test_client()
    forged = issue_access_token(
        secret="not-the-servers-key-but-long-enough-0123456789",
        issuer="mediaamp",
        user_id=alice.id,
        role="user",
        family_id="forged",
        now=datetime.now(UTC),
        ttl=timedelta(minutes=5),
    )
    forged_headers = {"Authorization": f"Bearer {forged}"}

    statuses = [get_from(client, "10.7.0.1", "/tasks", forged_headers) for _ in range(5)]

    assert statuses == [401] * 3 + [429] * 2
    assert get_from(client, "10.7.0.2", "/tasks", logged_in(client, alice, "10.7.0.2")) == 200


def test_probes_metrics_and_static_files_are_outside_the_per_caller_limit(
    make_app: MakeApp,
) -> None:
    """A load balancer's probes and the metrics scraper, often behind one address with other
    clients, are never refused; nor are they counted against that address."""
    client = make_app(ratelimit_default="2/minute").test_client()
    urls = ["/health", "/ready", "/metrics", "/apidocs/static/swagger-ui.css"]

    statuses = {url: [get_from(client, "10.8.0.1", url) for _ in range(5)] for url in urls}

    assert statuses == {url: [200] * 5 for url in urls}
    assert [get_from(client, "10.8.0.1", "/openapi.json") for _ in range(3)] == [200, 200, 429]


# --------------------------------------------------------------------------- email addresses


def test_registration_answers_alike_for_a_taken_and_a_free_email(
    client: FlaskClient, alice: Account
) -> None:
    password = "s3cret-passphrase"
    taken = client.post(
        "/register",
        json={"username": "carol", "email": "ALICE@example.com", "password": password},
    )
    free = client.post(
        "/register",
        json={"username": "dave", "email": "dave@example.com", "password": password},
    )

    assert (taken.status_code, free.status_code) == (201, 201), taken.json
    assert set(taken.json) == set(free.json)
    assert taken.json["email"] == "alice@example.com"
    assert client.post("/login", json={"username": "carol", "password": password}).status_code == (
        200
    )


def test_an_email_change_answers_alike_for_a_taken_and_a_free_email(
    client: FlaskClient, alice: Account, bob: Account, login: Callable[[Account], Headers]
) -> None:
    headers = login(alice)

    taken = client.patch("/me", json={"email": "bob@example.com"}, headers=headers)
    free = client.patch("/me", json={"email": "alice2@example.com"}, headers=headers)

    assert (taken.status_code, free.status_code) == (200, 200), taken.json
    assert set(taken.json) == set(free.json)
    assert client.get("/me", headers=login(bob)).json["email"] == "bob@example.com"
