"""How ``tamrl serve`` runs uvicorn: with limits on what a connection may send before the app sees a request.

uvicorn's httptools protocol accepts a request line and headers of any size and waits for them without end, so one
client can hold connections open for ever (a slow trickle of header bytes) or make the server buffer a 4 MiB header.
`GuardedHttpTools` adds, per request:

- a size limit on the request line and headers (``max_head`` bytes, counted as they arrive, before they are
  parsed, so a head that comes in one read counts too): past it the server answers 431 and closes the connection;
- a deadline for them (``head_timeout`` seconds from the connection's start, or from the first byte of a later
  request on a kept-alive connection): past it the server answers 408 and closes the connection.

These answers are plain text, as uvicorn's own 400 for a malformed request: they come before the app, and so before
its Problem bodies. The body's size and sending time are the app's to limit (`service.limits.BodyLimit`); the open
connections are uvicorn's ``limit_concurrency`` (503 past it); idle kept-alive connections close after uvicorn's
``timeout_keep_alive`` (5 s).
"""

import asyncio
from functools import partial

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size limit and a deadline on each request's line and headers."""

    def __init__(self, *args, max_head: int, head_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_head, self.head_timeout = max_head, head_timeout
        self._head_bytes = 0
        self._in_head = False  # the deadline runs: from a connection's start or a request's first byte
        self._before_body = True  # bytes received are a request line or headers (not a body)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._before_body:
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > self.max_head:
                self._refuse(b"431 Request Header Fields Too Large", f"over {self.max_head:,} bytes of headers")
                return
        super().data_received(data)  # parses, calling on_message_begin and on_headers_complete as they come

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a later request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._stop_head()
        self._before_body = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._before_body, self._head_bytes = True, 0

    def _start_head(self) -> None:
        self._in_head = True
        self._head_timer = self.loop.call_later(self.head_timeout, self._too_slow)

    def _stop_head(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._refuse(b"408 Request Timeout", f"request line and headers not received within {self.head_timeout:g} s")

    def _refuse(self, status: bytes, reason: str) -> None:
        """Answer ``status`` (when no response is under way) and close the connection."""
        self._stop_head()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = reason.encode()
            self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (status, len(body), body))  # fmt: skip
        self.transport.close()


def serve(app: FastAPI, settings: Settings, host: str, port: int) -> None:
    """Run ``app`` under uvicorn on ``host``:``port`` with the server limits of ``settings``."""
    protocol = partial(GuardedHttpTools, max_head=settings.max_header_bytes, head_timeout=settings.header_timeout_s)
    uvicorn.run(app, host=host, port=port, http=protocol, limit_concurrency=settings.max_connections,
                log_level="warning", access_log=False)  # fmt: skip
