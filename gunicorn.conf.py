"""gunicorn settings, overridable through environment variables."""

import json
import multiprocessing
import os
import time

from gunicorn.glogging import Logger
from pythonjsonlogger.json import JsonFormatter

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '5000')}")
# With Redis (workers share the cache and the rate-limit counts): one single-threaded worker per
# core. The threads of one worker take turns on its interpreter lock, and a thread woken by a
# reply from PostgreSQL or Redis waits for it, each handoff costing both threads CPU and latency;
# separate processes are scheduled by the kernel instead. More processes than cores cost more
# than they gain where PostgreSQL and Redis share the cores (a switch between processes leaves
# each one's caches cold): bench/api.py --repeat 3 on 2 cores, 2 workers x 1 thread against 4 x 1
# (the default until then), on the same machine minutes apart: date-view misses 0.27 x ceiling
# against 0.18 (p99 34 ms against 62), list misses 0.27 against 0.27 (p99 41 against 55),
# GET /task/<id> misses 0.40 against 0.35 (p99 25 against 55), PUT p99 41 ms against 112, cache
# hits 0.71/0.66 against 0.76/0.64 x ceiling. (Earlier: 4 x 1 answered 15-70% more misses than
# 2 x 2, and 4 x 2 25-35% fewer GET /task/<id> misses than 2 x 2. Later, 3 x 1 against two runs
# of 2 x 1 the same hour: cache hits 0.75-0.80 x ceiling against 0.62-0.69, misses within
# 0.01-0.03, but p99 higher on every miss and write row, PUT's 50.5 ms against 27-29.)
# Without Redis (the embedded default) the response cache and rate-limit counts live in each
# process, so one worker keeps them exact, with two threads so that one slow request does not
# hold up the next.
_with_redis = bool(os.environ.get("REDIS_URL"))
_default_workers = multiprocessing.cpu_count() if _with_redis else 1
workers = int(os.environ.get("WEB_CONCURRENCY", _default_workers))
# A database farther away than this host (round trips of milliseconds) needs more threads, or
# more workers.
threads = int(os.environ.get("GUNICORN_THREADS", "1" if _with_redis else "2"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On SIGTERM, requests in flight get this long to finish before workers are killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads new connections
# over them. On one shared socket the first worker to wake accepts a burst of connections (seen:
# 14 of 16 keep-alive connections in one worker, two workers idle), and those clients then queue
# for that one worker's interpreter lock while the other workers idle.
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "true").lower() == "true"
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"
# One log line per request: gunicorn's access line below (with the app's user id), not also the
# app's own one (REQUEST_LOG, a setting of the app, read by the workers this master forks).
os.environ.setdefault("REQUEST_LOG", "false" if accesslog else "true")


class JsonAccessLogger(Logger):
    """One JSON object per request on the access log (quotes and odd bytes escaped properly).
    With LOG_FORMAT=json (the default) gunicorn's own messages (start, worker boot and exit,
    timeouts) are JSON too, in the app's shape (app.observability.logging.json_formatter; not
    imported from there, which would import the whole app into the master), so that every line
    the api container writes parses."""

    def setup(self, cfg):  # type: ignore[no-untyped-def]
        super().setup(cfg)
        if os.environ.get("LOG_FORMAT", "json").lower() == "json":
            formatter = JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
            for handler in self.error_log.handlers:
                handler.setFormatter(formatter)

    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        if not (self.cfg.accesslog or self.cfg.logconfig or self.cfg.syslog):
            return
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "logger": "gunicorn.access",
            "remote_addr": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "status": resp.status_code,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 2),
            "request_id": dict(resp.headers).get("X-Request-ID"),
            "user_id": environ.get("mediaamp.user_id"),  # set by the app (USER_ID_ENVIRON)
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        self.access_log.info(json.dumps(line))


logger_class = JsonAccessLogger


def on_starting(server):  # type: ignore[no-untyped-def]
    # Prometheus multi-process mode: without the directory every request fails (the metrics
    # hook cannot open its file), e.g. when /tmp is a fresh tmpfs; and prometheus_client requires
    # it emptied of a previous run's files. It must belong to this gunicorn alone.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    # Prometheus multi-process mode: forget the metrics files of a worker that is gone.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    # The app's objects (modules, models, schemas: hundreds of thousands, alive for the worker's
    # life) leave the garbage collector's view: a full collection then walks only what requests
    # allocate, instead of pausing every thread of the worker for tens of milliseconds.
    import gc

    gc.collect()
    gc.freeze()
