"""The response cache through the API: no stale answer after any write, for every role; keys;
ETag/If-None-Match; If-Match on PUT/DELETE /task/<id>, sequential and concurrent.

Freshness is checked against the truth: right after each write, every watched answer of the
cached app (the `app` fixture, in-process cache; for the no-stale matrix also an app on the same
database with its cache in a real redis-server) must equal the answer of an app built with the
cache off on the same database (`uncached_app`). An answer the write changed must come back as a
MISS, and its old ETag must no longer give a 304: the entry warmed before the write (a HIT) is not
served again. Writes go through the cached app, the way a deployment's writes reach its cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from apiflask import APIFlask
from celery import _state as celery_state
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from app.cache.store import GLOBAL_GENERATION, ResponseCache
from app.extensions import db
from app.models import Role, Task, TaskAuditEntry
from app.models.task_log import TaskLogEntry
from tests.conftest import Account, side_app
from tests.conftest import test_settings as settings_for
from tests.reliability.helpers import running_redis

Headers = dict[str, str]
Login = Callable[[Account], Headers]

DAY = date(2031, 5, 20)  # logged when the world is built
NEW_DAY = date(2031, 5, 21)  # logged by the "loader" write
VIEWERS = ("owner", "other", "moderator", "admin")  # alice, bob, the moderator, the admin
THREADS = 20


# --- apps and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def uncached_app(app: APIFlask) -> Iterator[APIFlask]:
    """The same database behind an app with the cache off: the fresh answer to compare with."""
    settings = settings_for(app.config["SQLALCHEMY_DATABASE_URI"], cache_enabled=False)
    with side_app(settings) as application:
        assert "response_cache" not in application.extensions
        yield application


@pytest.fixture(autouse=True)
def _forget_earlier_tests(app: APIFlask) -> None:
    """Tests truncate tables and restart ids without going through the ORM, so an entry cached by
    an earlier test could match a key of this one: start from a new global generation."""
    cache: ResponseCache = app.extensions["response_cache"]
    cache.bump([GLOBAL_GENERATION])


@pytest.fixture(scope="session")
def redis_cached_app(app: APIFlask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[APIFlask]:
    """The same database behind an app whose cache is a redis-server of its own."""
    with running_redis(tmp_path_factory.mktemp("redis-cache")) as server:
        settings = settings_for(app.config["SQLALCHEMY_DATABASE_URI"], redis_url=server.url)
        with side_app(settings) as application:
            assert application.extensions["response_cache"].backend.name == "redis"
            yield application


@pytest.fixture
def cache_kind() -> str:
    """Which cache the test's `client` talks to: the `app` fixture's in-process one, or Redis."""
    return "memory"


@pytest.fixture
def client(app: APIFlask, cache_kind: str, request: pytest.FixtureRequest) -> Iterator[FlaskClient]:
    if cache_kind == "memory":
        yield app.test_client()
        return
    cached_app: APIFlask = request.getfixturevalue("redis_cached_app")
    cached_app.extensions["response_cache"].bump([GLOBAL_GENERATION])
    # Jobs queued by its requests (run eagerly, in this process) run in that app, as a worker
    # of that deployment would: their writes invalidate its cache.
    celery = cached_app.extensions["celery"]
    default, current = celery_state.default_app, getattr(celery_state._tls, "current_app", None)
    celery_state.set_default_app(celery)
    celery_state._set_current_app(celery)
    try:
        yield cached_app.test_client()
    finally:
        celery_state.set_default_app(default)
        celery_state._set_current_app(current)


@pytest.fixture
def fresh(uncached_app: APIFlask) -> FlaskClient:
    return uncached_app.test_client()


def answer(response: TestResponse) -> tuple[int, Any, str | None]:
    return response.status_code, response.get_json(silent=True), response.headers.get("Link")


def create(client: FlaskClient, headers: Headers, **body: Any) -> int:
    response = client.post("/task", json={"task_name": "a task", **body}, headers=headers)
    assert response.status_code == 201, response.json
    task_id: int = response.json["id"]
    return task_id


def run_loader(client: FlaskClient, admin_headers: Headers, day: date) -> None:
    response = client.post(
        "/admin/jobs/daily-log", json={"date": day.isoformat()}, headers=admin_headers
    )
    assert response.status_code == 202, response.json
    status = client.get(response.json["status_url"], headers=admin_headers)
    assert status.json["state"] == "succeeded", status.json


def audit_count(app: APIFlask, task_id: int) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count())
            .select_from(TaskAuditEntry)
            .where(TaskAuditEntry.task_id == task_id)
        )
        return int(count or 0)


def task_row(app: APIFlask, task_id: int) -> dict[str, Any]:
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task is not None
        return {c.key: getattr(task, c.key) for c in Task.__table__.columns}


# --- the world: four roles, four tasks, one logged day ------------------------------------------


@dataclass
class World:
    accounts: dict[str, Account]
    headers: dict[str, Headers]
    alice_task: int  # created by and assigned to alice
    shared: int  # created by the moderator, assigned to alice
    bobs: int  # created by and assigned to bob
    unassigned: int  # created by the admin, assigned to nobody
    log_ids: dict[int, int] = field(default_factory=dict)  # task id -> its log entry of DAY

    @property
    def task_ids(self) -> list[int]:
        return [self.alice_task, self.shared, self.bobs, self.unassigned]

    def urls(self, viewer: str) -> list[str]:
        return [
            "/tasks",
            f"/tasks?date={DAY}",
            f"/tasks?date={NEW_DAY}",
            # No other spelling of a day is accepted (a Unix time, a datetime: 422), so none has
            # an answer of its own in the cache.
            *(["/tasks?deleted=include"] if viewer == "admin" else []),
            *(f"/task/{task_id}" for task_id in self.task_ids),
            *(f"/logs/{log_id}" for log_id in self.log_ids.values()),
        ]


@pytest.fixture
def world(
    app: APIFlask,
    client: FlaskClient,
    login: Login,
    admin: Account,
    moderator: Account,
    alice: Account,
    bob: Account,
) -> World:
    accounts = {"owner": alice, "other": bob, "moderator": moderator, "admin": admin}
    headers = {role: login(account) for role, account in accounts.items()}
    built = World(
        accounts=accounts,
        headers=headers,
        alice_task=create(client, headers["owner"], task_name="alice's", assigned_user_id=alice.id),
        shared=create(client, headers["moderator"], task_name="shared", assigned_user_id=alice.id),
        bobs=create(client, headers["other"], task_name="bob's", assigned_user_id=bob.id),
        unassigned=create(client, headers["admin"], task_name="nobody's"),
    )
    run_loader(client, headers["admin"], DAY)
    with app.app_context():
        built.log_ids = {
            e.task_id: e.id
            for e in db.session.scalars(select(TaskLogEntry).where(TaskLogEntry.log_date == DAY))
        }
    assert set(built.log_ids) == set(built.task_ids)
    return built


@dataclass(frozen=True)
class Warm:
    answer: tuple[int, Any, str | None]
    etag: str | None


def warm_up(client: FlaskClient, world: World) -> dict[tuple[str, str], Warm]:
    """Every watched answer, cached: the second request of each 200 answer is a HIT."""
    warmed: dict[tuple[str, str], Warm] = {}
    for viewer in VIEWERS:
        headers = world.headers[viewer]
        for url in world.urls(viewer):
            first = client.get(url, headers=headers)
            second = client.get(url, headers=headers)
            assert answer(first) == answer(second), url
            if first.status_code == 200:
                assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
                assert second.headers["ETag"] == first.headers["ETag"]
            warmed[viewer, url] = Warm(answer(second), second.headers.get("ETag"))
    return warmed


def assert_nothing_stale(
    client: FlaskClient,
    fresh: FlaskClient,
    world: World,
    warmed: dict[tuple[str, str], Warm],
    shared_scope: frozenset[str] = frozenset(),
) -> set[tuple[str, str]]:
    """Right after a write: every watched answer is the fresh one; a changed one is not served
    from the entry warmed before (a MISS, and its old ETag gives no 304). Returns what changed."""
    changed: set[tuple[str, str]] = set()
    for (viewer, url), before in warmed.items():
        headers = world.headers[viewer]
        truth = answer(fresh.get(url, headers=headers))
        now = client.get(url, headers=headers)
        assert answer(now) == truth, f"{viewer} GET {url}: stale answer"
        conditional = client.get(url, headers={**headers, "If-None-Match": before.etag or '"x"'})
        if truth == before.answer:
            if before.etag is not None:
                assert conditional.status_code == 304, f"{viewer} GET {url}"
            continue
        changed.add((viewer, url))
        if now.status_code == 200 and viewer not in shared_scope:
            assert now.headers["X-Cache"] == "MISS", f"{viewer} GET {url}: old entry served"
        assert conditional.status_code == truth[0], f"{viewer} GET {url}: old ETag still 304"
    return changed


# --- every write kind, seen by every role -------------------------------------------------------


@dataclass(frozen=True)
class WriteKind:
    prepare: Callable[[FlaskClient, World], None]
    write: Callable[[FlaskClient, World], None]
    # (viewer, url) answers the write must change: the check above is not vacuous.
    must_change: Callable[[World], set[tuple[str, str]]]
    shared_scope: frozenset[str] = frozenset()


def _nothing(_client: FlaskClient, _world: World) -> None:
    return None


def _create_own(client: FlaskClient, world: World) -> None:
    create(client, world.headers["owner"], assigned_user_id=world.accounts["owner"].id)


def _put(client: FlaskClient, world: World, actor: str, task_id: int, **body: Any) -> None:
    response = client.put(f"/task/{task_id}", json=body, headers=world.headers[actor])
    assert response.status_code == 200, response.json


def _delete(client: FlaskClient, world: World, actor: str, task_id: int) -> None:
    response = client.delete(f"/task/{task_id}", headers=world.headers[actor])
    assert response.status_code == 204, response.json


def _restore(client: FlaskClient, world: World) -> None:
    response = client.post(f"/task/{world.bobs}/restore", headers=world.headers["admin"])
    assert response.status_code == 200, response.json


def _purge(client: FlaskClient, world: World) -> None:
    response = client.delete(f"/admin/tasks/{world.bobs}", headers=world.headers["admin"])
    assert response.status_code == 204, response.json


def _set_role(client: FlaskClient, world: World, viewer: str, role: Role) -> None:
    user_id = world.accounts[viewer].id
    response = client.patch(
        f"/admin/users/{user_id}", json={"role": role.value}, headers=world.headers["admin"]
    )
    assert response.status_code == 200, response.json


def _change_roles(client: FlaskClient, world: World) -> None:
    _set_role(client, world, "other", Role.MODERATOR)  # bob now sees every task
    _set_role(client, world, "moderator", Role.USER)  # the moderator only her own


def _each(viewers: tuple[str, ...], *urls: str) -> set[tuple[str, str]]:
    return {(viewer, url) for viewer in viewers for url in urls}


STAFF = ("moderator", "admin")

WRITE_KINDS: dict[str, WriteKind] = {
    "create by the owner": WriteKind(
        _nothing,
        _create_own,
        lambda w: _each(("owner", *STAFF), "/tasks"),
    ),
    "update by the owner": WriteKind(
        _nothing,
        lambda c, w: _put(c, w, "owner", w.alice_task, status="inactive"),
        lambda w: _each(
            ("owner", *STAFF), "/tasks", f"/task/{w.alice_task}", f"/logs/{w.log_ids[w.alice_task]}"
        ),
    ),
    "update by a moderator": WriteKind(
        _nothing,
        lambda c, w: _put(c, w, "moderator", w.bobs, task_name="renamed", priority="CRITICAL"),
        lambda w: _each(
            ("other", *STAFF),
            "/tasks",
            f"/tasks?date={DAY}",
            f"/task/{w.bobs}",
            f"/logs/{w.log_ids[w.bobs]}",
        ),
    ),
    "reassign away and to": WriteKind(
        _nothing,
        lambda c, w: _put(c, w, "moderator", w.shared, assigned_user_id=w.accounts["other"].id),
        lambda w: (
            _each(("owner", "other", *STAFF), "/tasks", f"/task/{w.shared}")
            | _each(("owner", "other"), f"/tasks?date={DAY}", f"/logs/{w.log_ids[w.shared]}")
        ),
    ),
    "assign an unassigned task": WriteKind(
        _nothing,
        lambda c, w: _put(c, w, "admin", w.unassigned, assigned_user_id=w.accounts["other"].id),
        lambda w: _each(("other", *STAFF), "/tasks", f"/task/{w.unassigned}"),
    ),
    "soft delete": WriteKind(
        _nothing,
        lambda c, w: _delete(c, w, "moderator", w.bobs),
        lambda w: (
            _each(("other", *STAFF), "/tasks", f"/task/{w.bobs}", f"/logs/{w.log_ids[w.bobs]}")
            | {("admin", "/tasks?deleted=include")}
        ),
    ),
    "restore": WriteKind(
        lambda c, w: _delete(c, w, "moderator", w.bobs),
        _restore,
        lambda w: _each(
            ("other", *STAFF), "/tasks", f"/task/{w.bobs}", f"/logs/{w.log_ids[w.bobs]}"
        ),
    ),
    "purge": WriteKind(
        _nothing,
        _purge,
        lambda w: _each(
            ("other", *STAFF), "/tasks", f"/task/{w.bobs}", f"/logs/{w.log_ids[w.bobs]}"
        ),
    ),
    "loader run": WriteKind(
        _nothing,
        lambda c, w: run_loader(c, w.headers["admin"], NEW_DAY),
        lambda w: _each(
            VIEWERS,
            f"/tasks?date={NEW_DAY}",
        ),
    ),
    "role change": WriteKind(
        _nothing,
        _change_roles,
        lambda w: _each(("other", "moderator"), "/tasks", f"/task/{w.unassigned}"),
        # Bob is a moderator now: the moderators' entries are his to share (fresh, not stale).
        shared_scope=frozenset({"other"}),
    ),
}


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
@pytest.mark.parametrize("kind", list(WRITE_KINDS))
def test_no_role_is_served_a_stale_answer_after_a_write(
    client: FlaskClient, fresh: FlaskClient, world: World, kind: str
) -> None:
    write_kind = WRITE_KINDS[kind]
    write_kind.prepare(client, world)
    warmed = warm_up(client, world)

    write_kind.write(client, world)

    changed = assert_nothing_stale(client, fresh, world, warmed, write_kind.shared_scope)
    missing = write_kind.must_change(world) - changed
    assert not missing, f"expected these answers to change: {sorted(missing)}"


# --- keys: callers and query parameters ---------------------------------------------------------


def test_users_never_see_each_others_cached_answers(
    client: FlaskClient, fresh: FlaskClient, world: World
) -> None:
    owner, other = world.headers["owner"], world.headers["other"]
    for url in ("/tasks", f"/tasks?date={DAY}", f"/task/{world.alice_task}"):
        client.get(url, headers=owner)
        assert client.get(url, headers=owner).headers["X-Cache"] == "HIT"

        theirs = client.get(url, headers=other)
        assert answer(theirs) == answer(fresh.get(url, headers=other))
        assert answer(theirs) != answer(client.get(url, headers=owner)), url
        assert theirs.headers.get("X-Cache") in {None, "MISS"}  # a 404 carries no X-Cache
    assert client.get(f"/task/{world.alice_task}", headers=other).status_code == 404

    # Admins see soft-deleted tasks, moderators do not: same URL, no shared entry.
    _delete(client, world, "moderator", world.unassigned)
    url = f"/task/{world.unassigned}"
    client.get(url, headers=world.headers["admin"])
    assert client.get(url, headers=world.headers["admin"]).headers["X-Cache"] == "HIT"
    assert client.get(url, headers=world.headers["moderator"]).status_code == 404


def test_query_parameters_are_part_of_the_key(
    client: FlaskClient, fresh: FlaskClient, world: World
) -> None:
    headers = world.headers["admin"]
    client.get("/tasks?sort=id", headers=headers)
    assert client.get("/tasks?sort=id", headers=headers).headers["X-Cache"] == "HIT"

    for url in ("/tasks?sort=-id", "/tasks?sort=id&per_page=1", "/tasks?sort=id&page=2&per_page=1"):
        response = client.get(url, headers=headers)
        assert response.headers["X-Cache"] == "MISS", url
        assert answer(response) == answer(fresh.get(url, headers=headers))
    ascending = client.get("/tasks?sort=id", headers=headers).json["items"]
    descending = client.get("/tasks?sort=-id", headers=headers).json["items"]
    assert [t["id"] for t in ascending] == sorted(world.task_ids)
    assert [t["id"] for t in descending] == sorted(world.task_ids, reverse=True)


# --- ETag / If-None-Match -----------------------------------------------------------------------


def test_the_task_etag_is_its_version_and_if_none_match_gives_304(
    client: FlaskClient, world: World
) -> None:
    headers = world.headers["owner"]
    url = f"/task/{world.alice_task}"
    etag = f'"task-{world.alice_task}-v1"'

    first = client.get(url, headers=headers)
    assert (first.status_code, first.headers["ETag"], first.headers["X-Cache"]) == (
        200,
        etag,
        "MISS",
    )
    hit = client.get(url, headers={**headers, "If-None-Match": etag})
    assert (hit.status_code, hit.headers["ETag"], hit.headers["X-Cache"]) == (304, etag, "HIT")
    assert hit.get_data() == b""
    assert (
        client.get(url, headers={**headers, "If-None-Match": '"other", ' + etag}).status_code == 304
    )
    assert client.get(url, headers={**headers, "If-None-Match": '"other"'}).status_code == 200

    # On a MISS too (a fresh generation: nothing cached for this key yet).
    _put(client, world, "owner", world.alice_task, description="changed")
    new_etag = f'"task-{world.alice_task}-v2"'
    miss = client.get(url, headers={**headers, "If-None-Match": new_etag})
    assert (miss.status_code, miss.headers["X-Cache"]) == (304, "MISS")
    stale = client.get(url, headers={**headers, "If-None-Match": etag})
    assert (stale.status_code, stale.headers["ETag"]) == (200, new_etag)
    assert stale.json["description"] == "changed"


def test_a_list_etag_gives_304_until_a_write_changes_the_list(
    client: FlaskClient, world: World
) -> None:
    headers = world.headers["moderator"]
    first = client.get("/tasks", headers=headers)
    etag = first.headers["ETag"]
    hit = client.get("/tasks", headers={**headers, "If-None-Match": etag})
    assert (hit.status_code, hit.headers["X-Cache"], hit.headers["ETag"]) == (304, "HIT", etag)

    create(client, world.headers["owner"], task_name="one more")
    after = client.get("/tasks", headers={**headers, "If-None-Match": etag})
    assert (after.status_code, after.headers["X-Cache"]) == (200, "MISS")
    assert after.headers["ETag"] != etag
    assert "one more" in [t["task_name"] for t in after.json["items"]]


# --- If-Match on PUT and DELETE -----------------------------------------------------------------


def test_put_with_a_matching_if_match_writes_and_returns_the_new_etag(
    app: APIFlask, client: FlaskClient, world: World
) -> None:
    headers = world.headers["moderator"]
    task_id = world.bobs
    response = client.put(
        f"/task/{task_id}",
        json={"task_name": "v2"},
        headers={**headers, "If-Match": f'"task-{task_id}-v1"'},
    )
    assert response.status_code == 200, response.json
    assert response.headers["ETag"] == f'"task-{task_id}-v2"'
    assert client.get(f"/task/{task_id}", headers=headers).headers["ETag"] == f'"task-{task_id}-v2"'
    assert task_row(app, task_id)["task_name"] == "v2"


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize(
    "if_match", ['"task-{id}-v1"', 'W/"task-{id}-v2"', '"something-else"', '"a", "task-{id}-v1"']
)
def test_a_stale_if_match_is_412_and_changes_nothing(
    app: APIFlask, client: FlaskClient, world: World, method: str, if_match: str
) -> None:
    headers = world.headers["moderator"]
    task_id = world.bobs
    _put(client, world, "moderator", task_id, description="now at v2")
    row_before, audit_before = task_row(app, task_id), audit_count(app, task_id)
    history_before = client.get(f"/task/{task_id}/history", headers=headers).json

    response = client.open(
        f"/task/{task_id}",
        method=method,
        json={"task_name": "lost update"} if method == "PUT" else None,
        headers={**headers, "If-Match": if_match.format(id=task_id)},
    )

    assert response.status_code == 412, response.json
    assert set(response.json) == {"code", "message", "description"}
    assert (response.json["code"], response.json["message"]) == (412, "Precondition Failed")
    assert task_row(app, task_id) == row_before
    assert row_before["deleted_at"] is None and row_before["version"] == 2
    assert audit_count(app, task_id) == audit_before
    assert client.get(f"/task/{task_id}/history", headers=headers).json == history_before


@pytest.mark.parametrize("if_match", ["*", None])
def test_star_or_no_if_match_proceeds(
    app: APIFlask, client: FlaskClient, world: World, if_match: str | None
) -> None:
    headers = world.headers["moderator"]
    extra = {} if if_match is None else {"If-Match": if_match}
    _put(client, world, "moderator", world.bobs, description="now at v2")

    put = client.put(f"/task/{world.bobs}", json={"task_name": "x"}, headers={**headers, **extra})
    assert (put.status_code, put.headers["ETag"]) == (200, f'"task-{world.bobs}-v3"')
    deleted = client.delete(f"/task/{world.bobs}", headers={**headers, **extra})
    assert deleted.status_code == 204
    assert task_row(app, world.bobs)["deleted_at"] is not None


def test_delete_with_a_matching_if_match_deletes(
    app: APIFlask, client: FlaskClient, world: World
) -> None:
    headers = world.headers["admin"]
    etag = client.get(f"/task/{world.unassigned}", headers=headers).headers["ETag"]
    response = client.delete(f"/task/{world.unassigned}", headers={**headers, "If-Match": etag})
    assert response.status_code == 204
    after = client.get(f"/task/{world.unassigned}", headers=headers)
    assert after.json["deleted_at"] is not None
    assert after.headers["ETag"] == f'"task-{world.unassigned}-v2"'


def _race(app: APIFlask, requests: list[Callable[[FlaskClient], TestResponse]]) -> list[int]:
    """Each request from a thread of its own (its own client), all released at once."""
    barrier = threading.Barrier(len(requests))
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(send: Callable[[FlaskClient], TestResponse]) -> None:
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            status = send(client).status_code
        except BaseException as exc:  # reported below, in the test's thread
            with lock:
                errors.append(exc)
            return
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=run, args=(send,)) for send in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert not errors, errors
    return statuses


def test_concurrent_puts_with_the_same_if_match_let_exactly_one_through(
    app: APIFlask, client: FlaskClient, world: World
) -> None:
    headers = {**world.headers["moderator"], "If-Match": f'"task-{world.bobs}-v1"'}
    audit_before = audit_count(app, world.bobs)

    def put(n: int) -> Callable[[FlaskClient], TestResponse]:
        return lambda c: c.put(f"/task/{world.bobs}", json={"task_name": f"w{n}"}, headers=headers)

    statuses = _race(app, [put(n) for n in range(THREADS)])

    assert sorted(statuses) == [200] + [412] * (THREADS - 1)
    assert audit_count(app, world.bobs) == audit_before + 1
    row = task_row(app, world.bobs)
    assert row["version"] == 2 and row["task_name"].startswith("w")
    got = client.get(f"/task/{world.bobs}", headers=world.headers["moderator"])
    assert (got.headers["ETag"], got.json["task_name"]) == (
        f'"task-{world.bobs}-v2"',
        row["task_name"],
    )


def test_concurrent_puts_without_if_match_never_lose_an_update_silently(
    app: APIFlask, world: World
) -> None:
    """Without If-Match each write proceeds; one that a concurrent write overtook is a 409 (retry),
    never a 500 nor a silent overwrite: one audit entry per 200."""
    headers = world.headers["moderator"]
    audit_before = audit_count(app, world.bobs)

    def put(n: int) -> Callable[[FlaskClient], TestResponse]:
        return lambda c: c.put(f"/task/{world.bobs}", json={"task_name": f"w{n}"}, headers=headers)

    statuses = _race(app, [put(n) for n in range(THREADS)])

    assert set(statuses) <= {200, 409}, statuses
    ok = statuses.count(200)
    assert ok >= 1
    assert audit_count(app, world.bobs) == audit_before + ok
    assert task_row(app, world.bobs)["version"] == 1 + ok
