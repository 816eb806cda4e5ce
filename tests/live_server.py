"""The app served over HTTP on a free local port, in a thread, for as long as a block lasts:
for clients that need a real server (schemathesis's HTTP transport, a generated client)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    """No access line per request: the app logs its own."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextlib.contextmanager
def serving(app: Callable[..., Any]) -> Iterator[str]:
    """The base URL of `app` (any WSGI callable) served by werkzeug's threaded server."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
