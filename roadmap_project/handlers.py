"""Django's ASGI handler, serving each request the way WSGI would: the whole
middleware chain and the view in one hop onto one of a few long-lived threads.

Django's ASGIHandler enters a fresh `ThreadSensitiveContext` per request, so
asgiref starts (and later joins) a thread per request, and everything a thread
keeps — its database connection, cache clients — is built and torn down with it.
It also runs Django's middleware in async mode, where every `process_request` and
`process_response` of a sync-first middleware is its own `sync_to_async` hop:
about a dozen thread hand-offs per request. Under load that churn, not the views,
set the cost (profile in docs/performance.md).

Here the middleware is loaded in sync mode and `get_response` runs in one hop
(roadmap_project.patches.django) on one of `REQUEST_THREADS` single-thread lanes
(asgiref's `ThreadSensitiveContext(executor=…)`), least busy first. Connections persist per
lane (CONN_MAX_AGE). Async views still work: Django calls them from the sync
chain through async_to_sync, back on the event loop.

In front of either handler, `RequireContentLength` refuses request bodies that
come without a Content-Length (411) instead of letting them be read as empty."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    Scope,
)
from django.conf import settings

from roadmap_project.patches.django import SyncMiddlewareASGIHandler


class Lane:
    def __init__(self, index: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-{index}")
        self.busy = 0


class LaneASGIHandler(SyncMiddlewareASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.lanes = [Lane(index) for index in range(settings.REQUEST_THREADS)]
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        """`ASGIHandler.__call__`, with the least busy lane's executor in its
        `ThreadSensitiveContext` instead of a fresh thread."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        with self.lock:
            lane = min(self.lanes, key=lambda candidate: candidate.busy)
            lane.busy += 1
        try:
            async with ThreadSensitiveContext(executor=lane.executor):
                await self.handle(scope, receive, send)
        finally:
            with self.lock:
                lane.busy -= 1


class RequireContentLength:
    """ASGI middleware: a request body comes with a Content-Length, or it is refused
    with 411 Length Required before Django sees it.

    Without Content-Length (HTTP/1.1 chunked) Django reads a body in full and DRF then
    treats it as empty, because its Request reads CONTENT_LENGTH bytes: a chunked batch
    retry with `concept_ids` used to retry every failed pair of the roadmap. Refusing
    is simpler and safer than counting bytes here: no client of this API needs
    chunked uploads (bodies are JSON under DATA_UPLOAD_MAX_MEMORY_SIZE), and the
    documented nginx in front buffers a chunked body and forwards it with a
    Content-Length. Nothing past the first non-empty body message is read; a request
    without a body (or with an empty chunked one) passes unchanged."""

    detail = (
        "A request body needs a Content-Length header; chunked transfer encoding is not accepted."
    )

    def __init__(self, app: ASGI3Application) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or any(
            name.lower() == b"content-length" for name, _ in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return
        # Empty messages (a server may send b"" with more_body before the end) are
        # no body; the first byte without a Content-Length is refused.
        message = await receive()
        while message["type"] == "http.request" and message.get("more_body"):
            if message.get("body"):
                break
            message = await receive()
        if message["type"] == "http.request" and message.get("body"):
            await self.refuse(send)
            return
        replayed = False

        async def replay() -> ASGIReceiveEvent:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return message

        await self.app(scope, replay, send)

    async def refuse(self, send: ASGISendCallable) -> None:
        body = json.dumps({"detail": self.detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 411,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
