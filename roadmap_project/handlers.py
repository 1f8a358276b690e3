"""Django's ASGI handler, with each request's synchronous code run on one of a
fixed set of long-lived threads instead of a new thread per request.

Django's ASGIHandler enters a fresh `ThreadSensitiveContext` per request, so
asgiref starts (and later joins) one thread per request, and everything a thread
keeps — its database connection, Redis clients — is built and torn down with it.
Under load that churn, not the views, took most of the server's time (profile in
docs/performance.md). asgiref's ThreadSensitiveContext accepts an executor the
caller owns: here that is one of `REQUEST_THREADS` single-thread lanes, chosen least
busy first, so a request's sync code still runs on one thread (what Django's
thread-sensitive code needs) and connections persist per lane (CONN_MAX_AGE)."""

import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler


class Lane:
    def __init__(self, index: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"asgi-lane-{index}")
        self.busy = 0


class LaneASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.lanes = [Lane(index) for index in range(settings.REQUEST_THREADS)]
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
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
