"""Build the response cache from the settings."""

from __future__ import annotations

from flask import Flask

from app.auth.session_memory import SessionMemory
from app.cache import invalidation  # noqa: F401  (installs the session hooks)
from app.cache.backends import CacheBackend, DiskBackend, MemoryBackend, RedisBackend
from app.cache.store import ResponseCache
from app.config import Settings


def init_cache(app: Flask, settings: Settings) -> ResponseCache | None:
    if not settings.cache_enabled:
        return None
    backend: CacheBackend
    kind = settings.cache_backend
    redis_url = settings.cache_redis_url or settings.redis_url
    if kind == "auto":
        kind = "redis" if redis_url else "disk"
    if kind == "redis":
        if not redis_url:
            raise ValueError("CACHE_BACKEND=redis needs CACHE_REDIS_URL or REDIS_URL")
        backend = RedisBackend(redis_url, settings.cache_timeout_ms / 1000)
    elif kind == "disk":
        backend = DiskBackend(
            settings.cache_dir, settings.cache_disk_max_bytes, settings.cache_timeout_ms / 1000
        )
    else:
        backend = MemoryBackend(settings.cache_max_entries, settings.cache_ttl_seconds)
    cache = ResponseCache(backend, settings.cache_ttl_seconds, settings.cache_retry_after_seconds)
    app.extensions["response_cache"] = cache
    app.extensions["session_memory"] = SessionMemory(settings.session_memory_max_entries)
    return cache
