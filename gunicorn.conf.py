"""gunicorn settings, overridable through environment variables."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '5000')}")
# Threads serve I/O-bound requests cheaply; workers use the cores. Without Redis (the embedded
# default) the response cache and rate-limit counts live in each process, so one worker keeps
# them exact; with REDIS_URL every worker shares them.
_default_workers = min(2 * multiprocessing.cpu_count(), 4) if os.environ.get("REDIS_URL") else 1
workers = int(os.environ.get("WEB_CONCURRENCY", _default_workers))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
accesslog = "-"
errorlog = "-"
