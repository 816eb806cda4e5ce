"""Running schemathesis's engine from a test as its command line runs it, and serving it an app
as a crowd of clients."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from schemathesis.cli.commands.run.context import ExecutionContext
from schemathesis.cli.commands.run.handlers.output import OutputHandler
from schemathesis.cli.events import LoadingFinished, LoadingStarted
from schemathesis.engine import events, from_schema


def run_engine(schema: Any) -> ExecutionContext:
    """All the phases the schema's config enables, their events read by the command line's own
    context and report: its figures and warnings (`ctx.summary()`), and its report printed to
    the test's output. (These are schemathesis's command-line classes, pinned with it.)"""
    config = schema.config
    ctx = ExecutionContext(config=config)
    output = OutputHandler(config=config)
    output.start(ctx)
    location = schema.location or "/openapi.json"
    stream: Iterator[events.EngineEvent] = itertools.chain(
        [
            LoadingStarted(location=location),
            LoadingFinished.from_schema(
                schema, location=location, start_time=time.time(), base_url=config.base_url
            ),
        ],
        from_schema(schema).execute(),
    )
    for event in stream:
        ctx.on_event(event)
        output.handle_event(ctx, event)
    output.shutdown(ctx)
    return ctx


def distinct_clients(app: Callable[..., Any]) -> Callable[..., Any]:
    """The app as a WSGI callable that sees each request come from another client address."""
    numbers = itertools.count(1)

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        number = next(numbers)
        environ["REMOTE_ADDR"] = f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
        return app(environ, start_response)

    return wsgi
