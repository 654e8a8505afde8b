"""Web conventions of every answer, in one middleware: ``Cache-Control`` and, on cube reads, an ``ETag`` with
``304 Not Modified``. CORS is Starlette's CORSMiddleware, set up beside it in `service.api.create_app`.

A read (GET or HEAD under /cubes, /flux or /tiles) answers ``Cache-Control: public, max-age=<max_age>`` and an
ETag: a hash of the service's version, the request's path and query, and the name and token of every served cube
(`service.catalog.Catalog.versions`; a token changes whenever a job writes, rewrites, resumes or finalizes a cube).
Every cube is in it because a query without ``cube=`` chooses among all of them: a new cube can change which one
answers. The ETag is computed before the handler runs, so a matching ``If-None-Match`` gets 304 without reading a
value; a cube rewritten in between gives new bytes under the old ETag, which the next request no longer matches, so a
client never keeps stale bytes. When the catalog cannot be listed, the middleware answers the 503 itself (the
handler would fail the same way, and the cause is logged once). Job endpoints and POST bodies (a region's totals)
answer ``no-store``, and so does every error answer.
"""

import hashlib

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.catalog import Catalog
from service.limits import Answer
from tamrl import __version__
from tamrl.errors import TamrlError

READ_PATHS = ("/cubes", "/flux", "/tiles")
READ_METHODS = ("GET", "HEAD")
NO_STORE = "no-store"


class WebConventions:
    """ASGI middleware: ``Cache-Control`` on every read and job answer, ETag and 304 on cube reads."""

    def __init__(self, app: ASGIApp, answer: Answer, catalog: Catalog, max_age: int):
        self.app, self.answer, self.catalog, self.max_age = app, answer, catalog, max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith((*READ_PATHS, "/jobs")):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in READ_METHODS or not path.startswith(READ_PATHS):
            await self.app(scope, receive, _with(send, {"Cache-Control": NO_STORE}))
            return
        try:
            etag = await self._etag(scope)
        except TamrlError as error:  # the catalog cannot be listed: the read would fail the same way
            await self.answer(error)(scope, receive, _with(send, {}))
            return
        headers = {"Cache-Control": f"public, max-age={self.max_age}", "ETag": etag}
        if _matches(Headers(scope=scope).get("if-none-match"), etag):
            await send({"type": "http.response.start", "status": 304,
                        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, _with(send, headers))

    async def _etag(self, scope: Scope) -> str:
        """The ETag of a read; UnavailableError when the catalog cannot be listed."""
        versions = self.catalog.versions() if self.catalog.local else await run_in_threadpool(self.catalog.versions)
        text = repr((__version__, scope["path"], scope.get("query_string", b""), versions))
        return f'"{hashlib.sha256(text.encode()).hexdigest()[:32]}"'


def _with(send: Send, headers: dict[str, str]) -> Send:
    """``send`` adding ``headers`` to a 200 answer, and ``Cache-Control: no-store`` to any other."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            out = MutableHeaders(scope=message)
            for key, value in (headers if message["status"] == 200 else {"Cache-Control": NO_STORE}).items():
                out[key] = value
        await send(message)

    return sending


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 asks for it) or is ``*``."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags
