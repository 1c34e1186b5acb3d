"""uvicorn's HTTP/1.1 protocol (h11) with the two guards a server facing slow or many clients needs, which uvicorn
lacks: a connection that has not sent a request's whole headers ``read_timeout_s`` after it opened (or after the first
byte of a later request), or keeps sending a body nobody reads after its answer, is closed, so idle or trickling
sockets cannot pile up until ``--max-connections`` shuts everyone out;
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


def _busy_response(max_connections: int) -> bytes:
    body = json.dumps({"detail": f"the server has {max_connections} connections open, its limit "
                                 "(--max-connections); retry shortly"}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


def guarded_protocol(*, read_timeout_s: float, max_connections: int,
                     on_closed: Callable[[str], None]) -> type[H11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``; ``on_closed(reason)`` counts each connection it ends
    (``max_connections`` or ``read_timeout``)."""
    busy = _busy_response(max_connections)

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.header_timer: asyncio.TimerHandle | None = None
            self.refused = len(self.connections) > max_connections  # this one included
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            if self.refused:  # answered once its request begins: a client reads a response to what it sent
                if not self.transport.is_closing():
                    on_closed("max_connections")
                    self.transport.write(busy)
                    self.transport.close()
                return
            super().data_received(data)
            self._watch_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _waiting(self) -> bool:
            """A request's headers are awaited (h11's IDLE: none, or only part, received), or a body still comes
            after the answer (an error sent before it was read)."""
            conn = self.conn
            late_body = conn.their_state is h11.SEND_BODY and conn.our_state in (h11.DONE, h11.MUST_CLOSE)
            return (conn.their_state is h11.IDLE or late_body) and not self.transport.is_closing()

        def _watch_headers(self) -> None:
            """A timer while ``_waiting``, started once: more trickling bytes never reset it."""
            if not self._waiting():
                self._stop_timer()
            elif self.header_timer is None:
                self.header_timer = self.loop.call_later(read_timeout_s, self._too_slow)

        def _stop_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _too_slow(self) -> None:
            self.header_timer = None
            if self._waiting():
                on_closed("read_timeout")
                self.transport.close()

    return GuardedH11Protocol


__all__: list[Any] = ["guarded_protocol"]
