"""Ctrl-C and SIGTERM during training: finish the step, save, then stop.

The first SIGINT or SIGTERM only sets a flag that the loop reads between steps. A second SIGINT
aborts at once with KeyboardInterrupt (the atomic checkpoint writes keep ``last.pt`` intact);
a SIGTERM after the first request (``torchrun`` forwards one when it is interrupted) keeps
waiting for the save. The previous handlers come back when the block ends.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

_NOTICE = (
    b"\nstopping after the current step and saving checkpoints/last.pt (Ctrl-C again aborts)\n"
)


class StopRequest:
    """Context manager installing the handlers; ``requested`` tells the loop to stop."""

    def __init__(self, *, notify: bool = True) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._notify = notify
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            if signum == signal.SIGINT:
                self._restore()
                raise KeyboardInterrupt
            return
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self._notify:
            os.write(2, _NOTICE)  # async-signal-safe, unlike printing through rich

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()
