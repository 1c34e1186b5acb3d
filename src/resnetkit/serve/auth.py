"""API-key authentication: ``Authorization: Bearer KEY``, ``X-API-Key: KEY`` or HTTP Basic with KEY as password.

Basic is there for the web page: a browser cannot add a Bearer header when it loads ``/``, but it asks
for a user name and password when a page answers 401 with a Basic challenge, then sends them with every
request to the server, the page's own ``fetch`` calls included. The key is compared in constant time
(SHA-256 digests of equal length through ``hmac.compare_digest``), so response timing does not reveal
how much of a guess was right, nor the key's length.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes of load balancers and orchestrators carry no key


def _digest(text: str | bytes) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text).digest()


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The key a request carries, from whichever of the three headers it uses."""
    if headers.get(b"x-api-key", b"").strip():  # (an empty one beside an Authorization header is no key)
        return headers[b"x-api-key"].strip()
    scheme, _, value = headers.get(b"authorization", b"").strip().partition(b" ")
    if scheme.lower() == b"bearer":
        return value.strip()
    if scheme.lower() == b"basic":
        try:
            return base64.b64decode(value.strip(), validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            return None
    return None


class ApiKeyMiddleware:
    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.expected = _digest(api_key)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = presented_key(dict(scope["headers"]))
        # Always compare, a missing key as an empty one, so both paths take the same time.
        if hmac.compare_digest(_digest(key or b""), self.expected) and key:
            await self.app(scope, receive, send)
            return
        detail = ("missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'" if key is None
                  else "wrong API key")
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="resnetkit"'),
            (b"www-authenticate", b'Basic realm="resnetkit", charset="UTF-8"')]})
        await send({"type": "http.response.body", "body": body})
