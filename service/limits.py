"""Limits on what one client may send, as ASGI middleware that answers before the app runs: the body's size and the
time to send it (`BodyLimit`), and requests a minute per client address (`RateLimit`).

Each refuses with a domain error that ``answer`` (`service.api.error_response`) turns into the error table's Problem,
so the status codes stay in one place. Limits on the request line and headers are the server's
(`service.server`): they must hold before a request reaches the app.
"""

import asyncio
import math
import threading
import time
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tamrl.errors import QuotaError, SlowClientError, TamrlError, TooLargeError

MAX_BODY_BYTES = 16_384
Answer = Callable[[TamrlError], Response]


class BodyLimit:
    """413 for a request body over ``limit`` bytes, whether sent with a length or in chunks; 408 for a body not
    received within ``timeout`` seconds (a client sending slowly to hold a connection and a thread).

    The body (at most ``limit`` bytes) is read before the app runs and then replayed to it.
    """

    def __init__(self, app: ASGIApp, answer: Answer, timeout: float, limit: int = MAX_BODY_BYTES,
                 larger: dict[str, int] | None = None):  # fmt: skip
        """``larger``: limits of paths whose bodies may exceed ``limit`` (a region's GeoJSON)."""
        self.app, self.answer, self.timeout, self.limit, self.larger = app, answer, timeout, limit, larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.larger.get(scope["path"], self.limit)
        too_large = TooLargeError(f"request bodies to {scope['path']} are limited to {limit:,} bytes")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._refuse(too_large, send)
        try:
            messages = await asyncio.wait_for(self._body(receive, limit), self.timeout)
        except TimeoutError:
            return await self._refuse(SlowClientError(f"the request body took over {self.timeout:g} s to send"), send)
        if messages is None:
            return await self._refuse(too_large, send)

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _body(self, receive: Receive, limit: int) -> list[Message] | None:
        """The request's messages up to the end of its body; None once they exceed ``limit`` bytes."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                return None
            if message["type"] != "http.request" or not message.get("more_body"):
                return messages

    async def _refuse(self, error: TamrlError, send: Send) -> None:
        response = self.answer(error)
        response.headers["Connection"] = "close"  # the rest of the body is never read
        await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def client_address(scope: Scope) -> str:
    """The address a request came from (a proxy's, behind one): whose share a request or a job counts against."""
    client = scope.get("client")
    return client[0] if client else ""


class RateLimit:
    """429 for a client address past ``per_minute`` requests a minute (a token bucket per address, refilled
    continuously, so a burst of ``per_minute`` is allowed once a minute)."""

    def __init__(self, app: ASGIApp, answer: Answer, per_minute: int):
        self.app, self.answer, self.per_minute = app, answer, per_minute
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when counted)
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        wait = self._take(client_address(scope))
        if wait:
            error = QuotaError(f"over {self.per_minute} requests a minute from this address; retry in {wait} s", wait)
            return await self.answer(error)(scope, receive, send)
        await self.app(scope, receive, send)

    def _take(self, address: str) -> int:
        """Take a token for ``address``: 0 when there was one, else the seconds until there is."""
        rate, now = self.per_minute / 60, time.monotonic()
        with self._lock:
            if len(self._buckets) > 10_000:  # forget full buckets: a fresh one is the same
                self._buckets = {
                    a: (t, w) for a, (t, w) in self._buckets.items() if t + (now - w) * rate < self.per_minute
                }
            tokens, when = self._buckets.get(address, (self.per_minute, now))
            tokens = min(self.per_minute, tokens + (now - when) * rate)
            if tokens < 1:
                self._buckets[address] = (tokens, now)
                return math.ceil((1 - tokens) / rate)
            self._buckets[address] = (tokens - 1, now)
            return 0
