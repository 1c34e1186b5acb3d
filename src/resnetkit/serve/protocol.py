"""uvicorn's HTTP/1.1 protocol (h11) with the two guards a server facing slow or many clients needs, which uvicorn
lacks: a connection that has not sent a request's whole headers ``read_timeout_s`` after it opened (or after the first
byte of a later request), or keeps sending, past its deadline, a body nobody reads after its answer, is closed, so
idle or trickling sockets cannot pile up until ``--max-connections`` shuts everyone out;
and a connection past ``max_connections`` is answered with the app's kind of 503 (JSON, ``Retry-After``, counted
in ``/metrics``) instead of uvicorn's plain-text one, which no middleware sees.

Request bodies have their own deadline in ``uploads.py`` (a 408 the client can read).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import BODY_TIMEOUTS


def _busy_response(max_connections: int) -> bytes:
    body = json.dumps({"detail": f"the server has {max_connections} connections open, its limit "
                                 "(--max-connections); retry shortly"}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


def guarded_protocol(*, read_timeout_s: float, max_connections: int,
                     on_closed: Callable[[str], None]) -> type[H11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``; ``on_closed(reason)`` counts each connection it ends
    (``max_connections``, ``read_timeout`` or ``late_body``)."""
    busy = _busy_response(max_connections)

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timer: asyncio.TimerHandle | None = None
            self.timed: str | None = None  # the phase the timer is for
            self.deadline = 0.0
            self.refused = len(self.connections) > max_connections  # this one included
            self._watch()

        def data_received(self, data: bytes) -> None:
            if self.refused:  # answered once its request begins: a client reads a response to what it sent
                if not self.transport.is_closing():
                    on_closed("max_connections")
                    self.transport.write(busy)
                    self.transport.close()
                return
            super().data_received(data)
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _phase(self) -> str | None:
            """``read_timeout`` while a request's headers are awaited (h11's IDLE: none, or only part, received);
            ``late_body`` while a body still comes after its answer was sent (an error sent before the body was
            read: drained so that the client, which may send all before it reads, gets that answer); else None."""
            conn = self.conn
            if self.transport.is_closing():
                return None
            if conn.their_state is h11.IDLE:
                return "read_timeout"
            if conn.their_state is h11.SEND_BODY and conn.our_state in (h11.DONE, h11.MUST_CLOSE):
                return "late_body"
            return None

        def _watch(self) -> None:
            """Headers get ``read_timeout_s`` from their first byte, however they trickle; a late body may pause for
            ``read_timeout_s`` at a time, ``BODY_TIMEOUTS`` times that in all (nginx's lingering close)."""
            phase = self._phase()
            if phase != self.timed:
                self._stop_timer()
                self.timed = phase
                if phase is None:
                    return
                self.deadline = self.loop.time() + read_timeout_s * (BODY_TIMEOUTS if phase == "late_body" else 1)
            elif phase != "late_body":
                return  # the headers' timer is never reset by more bytes
            if self.timer is not None:
                self.timer.cancel()
            wait = min(read_timeout_s, self.deadline - self.loop.time())
            self.timer = self.loop.call_later(max(wait, 0.0), self._too_slow)

        def _stop_timer(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer, self.timed = None, None

        def _too_slow(self) -> None:
            phase = self._phase()
            self.timer, self.timed = None, None
            if phase is not None:
                on_closed(phase)
                self.transport.close()

    return GuardedH11Protocol


__all__: list[Any] = ["guarded_protocol"]
