"""`make run`'s process manager: `honcho start` on the Procfile (web, worker, beat), stopped so
that Ctrl-C ends all of them within a few seconds, with no error line, no SIGKILL and nothing
left running.

    python -m app.dev_run [honcho start's options and process names]

Two things differ from `honcho start` (honcho 2.0.0, pinned):

- honcho sends its SIGTERM to each process's whole process group, so a process's children get
  it at the same time as their parent: a granian worker may exit before its main process knows
  that the server is stopping ("Unexpected exit from worker-1", an ERROR line), and Celery
  reports its pool processes killed under it (ERROR lines). Here the SIGTERM goes to each
  process alone, which stops its own children in order. honcho's SIGKILL (5 s after the first
  process stopped) still goes to the whole group; so does one here to a group still running
  8 s after its SIGTERM (honcho waits for ever when no process stops), and, once honcho is
  done, to a group with a process left. Each says so.
- honcho exits with 130 after Ctrl-C, which make reports as its own failure ("make: *** [run]
  Error 130"). Here a Ctrl-C stop exits 0; make, which got the Ctrl-C too, then ends silently.

The web server's graceful stop defaults to 3 s here (GRANIAN_WORKERS_KILL_TIMEOUT, unless set),
so that a request still running cannot hold it past honcho's 5 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from honcho import command, compat, manager

GRACEFUL_STOP_SECONDS = "3"
KILL_AFTER_SECONDS = 8.0


class SignalEachProcess(compat.ProcessManager):  # type: ignore[misc]
    """honcho's way to signal a process: SIGTERM to the process alone, SIGKILL to its group."""

    signalled: ClassVar[set[int]] = set()  # the processes (and process groups) stopped

    def terminate(self, pid: int) -> None:
        self.signalled.add(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        watchdog = threading.Timer(KILL_AFTER_SECONDS, kill_leftovers, args=({pid},))
        watchdog.daemon = True  # not once this process is done
        watchdog.start()


def kill_leftovers(groups: set[int]) -> None:
    """SIGKILL to the groups that still have a process (one that did not stop, or a child its
    parent did not stop)."""
    for group in sorted(groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, 0)  # raises when nothing is left in the group
            print(f"dev_run: SIGKILL to what is left of process group {group}", file=sys.stderr)
            os.killpg(group, signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> None:
    manager.ProcessManager = SignalEachProcess  # honcho's Manager makes one per run
    signals: dict[int, dict[str, Any]] = manager.SIGNALS
    signals[signal.SIGINT]["rc"] = 0  # Ctrl-C is how a development run ends
    os.environ.setdefault("GRANIAN_WORKERS_KILL_TIMEOUT", GRACEFUL_STOP_SECONDS)
    try:
        command.main(["start", *(sys.argv[1:] if argv is None else argv)])
    finally:
        kill_leftovers(SignalEachProcess.signalled)


if __name__ == "__main__":
    main()
