"""SIGTERM as an exception: a run stopped by a scheduler or ``kill`` unwinds like Ctrl-C.

Inside :func:`sigterm_raises` a SIGTERM raises :class:`Terminated` in the main thread
(the CLI exits 143 with one line); :func:`deferred` holds it until a multi-step write has
finished, so caches only ever hold whole entries.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM inside :func:`sigterm_raises`; exit status 143 (128 + 15).

    A KeyboardInterrupt, so that ``except Exception`` does not swallow it and code that
    cleans up after Ctrl-C does the same here; a CLI that does not know this class still
    stops cleanly (with Ctrl-C's 130).
    """

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process killed by it

    def __init__(self) -> None:
        super().__init__("terminated (SIGTERM)")


class _SigtermState:
    holding = 0  # nesting of deferred(): a SIGTERM waits until the write is complete
    pending = False


_STATE = _SigtermState()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _STATE.holding:
        _STATE.pending = True
        return
    raise Terminated()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread.

    The previous handler comes back on exit. Outside the main thread (where Python cannot
    install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextmanager
def deferred() -> Iterator[None]:
    """A critical section: a SIGTERM arriving inside raises :class:`Terminated` at its end
    (when it ends normally), so a multi-step write is never cut in half."""
    _STATE.holding += 1
    try:
        yield
    finally:
        _STATE.holding -= 1
        pending = _STATE.pending and not _STATE.holding
        if pending:  # consumed here, also when an error is already on its way out
            _STATE.pending = False
    if pending:
        raise Terminated()
