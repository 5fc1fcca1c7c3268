"""Stop signals that arrive before the service can act on them.

Importing the service takes a few hundred milliseconds (aiohttp, pydantic, redis). A SIGINT in
that window used to print a KeyboardInterrupt traceback and a SIGTERM or SIGHUP killed the
process silently. ``luna-sender`` records them from its first statement instead (stdlib only, so
this module is cheap to import), and the serving code logs them and exits 0 before binding the
port (docs/deployment.md, "Signals and exit codes").
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_received: list[int] = []


def _record(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)


def record_early() -> None:
    """Until the event loop takes over, a stop signal is only remembered."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _record)


def restore_defaults() -> None:
    """For the client commands (listen, publish): Ctrl-C is theirs to handle."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def ignore_stops() -> None:
    """The service has stopped: until the process ends, a repeated stop signal changes nothing.
    CPython puts the default handlers back while it finalizes, so a second SIGTERM 50 ms after
    the first killed a quickly stopped ``--workers`` parent with exit -15 (an outside pass: 5 of
    5); an ignored signal is left ignored."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def early() -> int | None:
    """The first stop signal received so far, if any."""
    return _received[0] if _received else None


def name(signum: int) -> str:
    return signal.Signals(signum).name
