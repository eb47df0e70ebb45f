"""uvicorn's HTTP/1.1 protocol with a deadline for each request head and a cap on idle
connections, so that slow or silent clients cannot pile up and starve the page.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but any byte
received cancels that timer, and nothing limits how long a request head may take: a client
sending one header line and then nothing (or a byte now and then) keeps its connection for as
long as it likes. Here a connection waiting for a request head (a new one, or one between two
requests) is idle: it is closed when its head is not complete ``header_timeout`` seconds after
it became idle, and when a new connection would make more than ``max_idle`` idle ones, the
longest idle are closed. A connection whose request is being answered is never closed here.

Imports uvicorn: import it only once the ``serve`` extra is known to be installed.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """:class:`H11Protocol` closing connections idle for ``header_timeout`` seconds and the
    oldest idle ones beyond ``max_idle``; :func:`guarded_protocol` sets the two."""

    header_timeout: float = 10.0
    max_idle: int = 32

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._become_idle()
        idle = [
            other
            for other in self.connections
            if other is not self and getattr(other, "_idle_since", None) is not None
        ]
        excess = len(idle) + 1 - self.max_idle
        if excess > 0:
            for other in sorted(idle, key=lambda protocol: protocol._idle_since)[:excess]:
                other._close_idle()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._update_idle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._update_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_idle()
        super().connection_lost(exc)

    def _update_idle(self) -> None:
        """Idle unless a request has been read and its answer is not complete yet."""
        if self.transport.is_closing():
            self._stop_idle()
        elif self.cycle is not None and not self.cycle.response_complete:
            self._stop_idle()
        elif self._idle_since is None:
            self._become_idle()

    def _become_idle(self) -> None:
        self._idle_since = self.loop.time()
        self._idle_timer = self.loop.call_later(self.header_timeout, self._close_idle)

    def _stop_idle(self) -> None:
        self._idle_since = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _close_idle(self) -> None:
        """Close the connection, as uvicorn's keep-alive timeout does."""
        self._stop_idle()
        if not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass  # half-way through a request head: there is nothing to finish
            self.transport.close()


@functools.cache
def guarded_protocol(header_timeout: float, max_idle: int) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's ``http`` option with these limits (the same class for
    the same limits)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "max_idle": max_idle},
    )
