"""The production server: granian (WSGI) with the project's defaults.

    python -m app.server [--target MODULE:FACTORY] [--check]

`--target` names a factory that returns the WSGI app (default `app:create_app`); `--check` prints
the effective options, builds the app once and exits. Each option comes from the environment,
granian's own variable first:

    workers           GRANIAN_WORKERS, else WEB_CONCURRENCY   one per core with REDIS_URL, else 1
    blocking threads  GRANIAN_BLOCKING_THREADS                1 with REDIS_URL, else 2
    host              GRANIAN_HOST, else HOST                 127.0.0.1 (see below)
    port              GRANIAN_PORT, else PORT                 5000
    graceful stop     GRANIAN_WORKERS_KILL_TIMEOUT            30 s, then the workers are killed
    respawn           GRANIAN_RESPAWN_FAILED_WORKERS          on
    worker lifetime   GRANIAN_WORKERS_LIFETIME                off (at least 60 s when set)

A non-loopback host is refused while the secrets are the development placeholders (APP_ENV
unset or development, SECRET_KEY/JWT_SECRET_KEY not set): anyone who read this repository
could sign tokens for a server reachable from the network.

Values are parsed as granian's CLI parses them (durations: `90`, `30s`, `1h30m`). granian's
access log is off: the app's own request line (app.observability.logging) is the access line,
with the request id and the user id, which the server cannot know. granian's own lines are
written in the app's format (LOG_FORMAT, LOG_LEVEL) on stderr, beside the app's.

granian is run through its embedded API (`granian.Granian`) rather than by exec'ing its CLI,
because three things need a hook in this process: its logging takes a dictionary built here in
the app's format (the CLI only reads a file); each worker builds the app through
`build_app`, which then freezes what it built out of the garbage collector's sight; and the
Prometheus directory is emptied right before the workers start. The cost: granian's other
variables (e.g. GRANIAN_BACKPRESSURE) are not read; add them here when one is needed.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from granian import Granian
from granian.cli import Duration
from granian.constants import Interfaces
from granian.log import LogLevels

from app.config import PLACEHOLDER_SECRETS, Settings, load_settings

DEFAULT_TARGET = "app:create_app"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
GRACEFUL_STOP_SECONDS = 30

Value = TypeVar("Value")
Default = TypeVar("Default")

# The launcher's own lines (not `__name__`: run with -m, that is "__main__").
log = logging.getLogger("app.server")


def available_cores() -> int:
    """The cores this process may run on (a CPU set or `taskset` counts; a CFS quota does not)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _from_env(
    environ: Mapping[str, str],
    names: tuple[str, ...],
    kind: click.ParamType[Value, Any],
    default: Default,
) -> Value | Default:
    """The first of `names` set (not empty) in `environ`, converted by `kind`; else `default`."""
    for name in names:
        raw = environ.get(name, "").strip()
        if raw:
            try:
                return kind.convert(raw, None, None)
            except click.BadParameter as error:
                raise ValueError(f"{name}={raw!r}: {error.message}") from None
    return default


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def check_exposure(host: str, settings: Settings) -> None:
    """Refuse to serve the network with secrets everyone knows (the development defaults)."""
    known = {settings.secret_key, settings.jwt_secret_key} & PLACEHOLDER_SECRETS
    if known and not settings.is_production_like and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} with the development secrets: set SECRET_KEY and "
            "JWT_SECRET_KEY (and APP_ENV), or serve on 127.0.0.1"
        )


def server_options(environ: Mapping[str, str], settings: Settings) -> dict[str, Any]:
    """`granian.Granian`'s keyword arguments (all but the target) for this environment."""
    # With Redis the workers share the cache and the rate-limit counts: one single-threaded
    # worker per core. The threads of one worker take turns on its interpreter lock, and each
    # handoff costs CPU and latency; the kernel schedules separate processes instead (measured
    # under gunicorn: 2 workers x 1 thread on 2 cores against 4 x 1 and 2 x 2,
    # docs/PERFORMANCE.md). Without Redis the rate-limit counts live in each process, so one
    # worker keeps them exact, with two threads so that one slow request does not hold up the
    # next.
    with_redis = bool(settings.redis_url)
    workers = _from_env(
        environ,
        ("GRANIAN_WORKERS", "WEB_CONCURRENCY"),
        click.IntRange(min=1),
        available_cores() if with_redis else 1,
    )
    # Set explicitly: granian's WSGI default is half its backpressure (512 threads per worker).
    blocking_threads = _from_env(
        environ, ("GRANIAN_BLOCKING_THREADS",), click.IntRange(min=1), 1 if with_redis else 2
    )
    address = _from_env(environ, ("GRANIAN_HOST", "HOST"), click.STRING, DEFAULT_HOST)
    check_exposure(address, settings)
    return {
        "interface": Interfaces.WSGI,
        "address": address,
        "port": _from_env(
            environ, ("GRANIAN_PORT", "PORT"), click.IntRange(min=1, max=65535), DEFAULT_PORT
        ),
        "workers": workers,
        "blocking_threads": blocking_threads,
        # On SIGTERM or SIGINT the workers stop accepting and finish the requests in flight;
        # any still busy after this long is killed (granian's default waits for ever).
        "workers_kill_timeout": _from_env(
            environ,
            ("GRANIAN_WORKERS_KILL_TIMEOUT",),
            Duration(min=1, max=1800),
            GRACEFUL_STOP_SECONDS,
        ),
        # A worker that dies is replaced (granian's default stops the whole server); one that
        # dies again within 5.5 s of its replacement stops it (granian's crash-loop rule).
        "respawn_failed_workers": _from_env(
            environ, ("GRANIAN_RESPAWN_FAILED_WORKERS",), click.BOOL, True
        ),
        "workers_lifetime": _from_env(
            environ, ("GRANIAN_WORKERS_LIFETIME",), Duration(min=60), None
        ),
        "log_access": False,
        "log_level": LogLevels(settings.log_level.lower()),
        "log_dictconfig": log_config(settings.log_format, settings.log_level),
    }


def log_config(log_format: str, level: str) -> dict[str, Any]:
    """granian's logging (its loggers `_granian` and `granian.access`, and this module's) in the
    app's format on stderr, so that with LOG_FORMAT=json every line the server writes parses."""
    formatter = "json_formatter" if log_format == "json" else "text_formatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"app": {"()": f"app.observability.logging.{formatter}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "app",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
            for name in ("_granian", "granian.access", log.name)
        },
    }


def base_url(address: str, port: int) -> str:
    """The URL of the address and port the server binds (an IPv6 address in brackets)."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"http://{host}:{port}"


def resolve_target(target: str) -> Callable[[], Callable[..., Any]]:
    """The factory `MODULE:FACTORY` names, imported."""
    module_name, _, factory_name = target.partition(":")
    if not module_name or not factory_name:
        raise ValueError(f"--target {target!r}: expected MODULE:FACTORY, e.g. {DEFAULT_TARGET}")
    try:
        factory: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not f"{module_name}.".startswith(f"{error.name}."):
            raise  # a module it imports is missing: the traceback tells which
        raise ValueError(f"--target {target!r}: no module {module_name}") from None
    for attribute in factory_name.split("."):
        if not hasattr(factory, attribute):
            raise ValueError(f"--target {target!r}: {module_name} has no {factory_name}")
        factory = getattr(factory, attribute)
    if not callable(factory):
        raise ValueError(f"--target {target!r}: {factory_name} is not callable")
    return factory  # type: ignore[no-any-return]


def build_app(target: str) -> Callable[..., Any]:
    """Run by each worker as it starts: build the app, then move what it built (modules, models,
    schemas: long-lived objects by the hundred thousand) out of the garbage collector's sight,
    so that a full collection walks only what requests allocate instead of pausing the worker
    for tens of milliseconds."""
    try:
        application = resolve_target(target)()
    except Exception:
        # Logged in the server's format; granian then replaces the worker, or stops if it keeps
        # failing.
        log.exception("the worker could not build %s", target)
        raise SystemExit(1) from None
    gc.collect()
    gc.freeze()
    return application


def prepare_multiprocess_dir(directory: str | None) -> None:
    """Prometheus multi-process mode (PROMETHEUS_MULTIPROC_DIR): made if missing (without it
    every request fails: the metrics hook cannot open its file) and emptied of a previous run's
    files, as prometheus_client requires. It must belong to this server alone.

    The files of a worker that exits stay: its counters and histograms are part of the totals.
    prometheus_client's mark_process_dead only removes live gauges' files, and the app has none
    (its gauges are computed at scrape time), so nothing is done when a worker exits."""
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.server", description="Serve the app with granian (WSGI)."
    )
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"MODULE:FACTORY, a function returning the WSGI app (default: {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="print the effective options as JSON, build the app once, and exit",
    )
    args = parser.parse_args(argv)
    try:
        options = server_options(os.environ, load_settings())
        # Imported here too, so that a wrong target fails before any worker starts.
        factory = resolve_target(args.target)
    except ValueError as error:  # a bad variable, a refused setting or target
        parser.exit(2, f"{parser.prog}: {error}\n")
    shown = {k: v for k, v in options.items() if k != "log_dictconfig"}
    if args.check:
        print(json.dumps({"target": args.target, **shown}))
        factory()
        return
    prepare_multiprocess_dir(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    server = Granian(args.target, **options)  # configures the logging above
    # The banner: `make run` prints no address of its own, as only this process knows it.
    url = base_url(options["address"], options["port"])
    docs = f" (Swagger UI: {url}/apidocs)" if args.target == DEFAULT_TARGET else ""
    log.info("serving %s on %s%s", args.target, url, docs, extra={"url": url, "options": shown})
    # What this process has imported (the app's modules) leaves the collector's sight before
    # granian forks the workers from it (multiprocessing's default start method on Linux before
    # Python 3.14): fewer pages copied into each worker, and less for its collections to walk.
    gc.collect()
    gc.freeze()
    server.serve(target_loader=build_app)  # called in each worker with the target


if __name__ == "__main__":
    main()
