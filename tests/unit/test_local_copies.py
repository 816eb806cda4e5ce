"""What a process keeps of the values lists remember (app.cache.store.ResponseCache's local
copies): one copy per prefix, of the latest version read, so that writes (each making the next
read take a new versioned key) do not pile up copies that will never be read again."""

from __future__ import annotations

from app.cache.backends import MemoryBackend
from app.cache.store import LOCAL_COPY_BYTES, LOCAL_COPY_OVERHEAD, ResponseCache


def cache() -> ResponseCache:
    return ResponseCache(MemoryBackend(max_entries=100, max_ttl_seconds=60), ttl_seconds=60)


def test_a_copy_is_read_under_its_own_key_only() -> None:
    copies = cache()
    copies.keep_local_copy("list-ids:a", "resp:list-ids:a:v1.2", b"ids")
    assert copies.local_copy("list-ids:a", "resp:list-ids:a:v1.2") == b"ids"
    assert copies.local_copy("list-ids:a", "resp:list-ids:a:v1.3") is None
    assert copies.local_copy("list-ids:b", "resp:list-ids:a:v1.2") is None


def test_a_newer_version_replaces_the_copy_of_the_older_one() -> None:
    copies = cache()
    value = b"x" * (LOCAL_COPY_BYTES // 10)
    for version in range(50):  # five times the budget, if every version were kept
        copies.keep_local_copy("list-ids:a", f"resp:list-ids:a:v1.{version}", value)
    copies.keep_local_copy("list-ids:b", "resp:list-ids:b:v1.0", b"other")
    assert copies.local_copy("list-ids:a", "resp:list-ids:a:v1.49") == value
    assert copies.local_copy("list-ids:a", "resp:list-ids:a:v1.48") is None
    assert copies.local_copy("list-ids:b", "resp:list-ids:b:v1.0") == b"other"
    assert copies._copies.currsize == len(value) + len(b"other") + 2 * LOCAL_COPY_OVERHEAD


def test_a_value_larger_than_the_budget_is_not_kept() -> None:
    copies = cache()
    copies.keep_local_copy("log-entries:a", "resp:log-entries:a:v1", b"x" * LOCAL_COPY_BYTES)
    assert copies.local_copy("log-entries:a", "resp:log-entries:a:v1") is None
