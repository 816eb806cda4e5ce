"""Build the response cache from the settings."""

from __future__ import annotations

from flask import Flask

from app.cache import invalidation  # noqa: F401  (installs the session hooks)
from app.cache.backends import CacheBackend, MemoryBackend, RedisBackend
from app.cache.store import ResponseCache
from app.config import Settings


def init_cache(app: Flask, settings: Settings) -> ResponseCache | None:
    if not settings.cache_enabled:
        return None
    backend: CacheBackend
    if settings.redis_url:
        backend = RedisBackend(settings.redis_url, settings.cache_timeout_ms / 1000)
    else:
        backend = MemoryBackend(settings.cache_max_entries, settings.cache_ttl_seconds)
    cache = ResponseCache(backend, settings.cache_ttl_seconds, settings.cache_retry_after_seconds)
    app.extensions["response_cache"] = cache
    return cache
