"""Django 6.1.3's internals this project builds on: the SQLite backend's transaction
hooks (a process-wide writer queue) and the ASGI handler's start-up (middleware in
sync mode, the whole chain in one thread hop)."""

import contextvars
import threading
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import OperationalError
from django.db.backends.sqlite3 import base
from django.http import HttpRequest, HttpResponseBase

_writer = threading.Lock()


class DatabaseWrapper(base.DatabaseWrapper):
    """SQLite whose writers queue in-process instead of sleep-polling.

    A transaction takes SQLite's write lock at `BEGIN IMMEDIATE`. When another
    connection holds it, SQLite's busy handler sleeps and polls (1, 2, 5 … up to
    100 ms per sleep), so under concurrent writers the waiting, not the work, sets
    the latency: a profile of the retry endpoint under load showed 79 % of the
    server's thread time in that sleep. Here every connection of the process first
    takes one process-wide lock, which wakes the next writer the moment the previous
    one commits; SQLite's own lock (and busy timeout) still arbitrates between
    processes. Django has no public hook around BEGIN, COMMIT, ROLLBACK and close,
    so its private ones are overridden. Loaded by Django as the ENGINE
    `roadmap_project.db.sqlite3`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._holds_writer_lock = False

    def _start_transaction_under_autocommit(self) -> None:
        timeout = self.settings_dict["OPTIONS"].get("timeout", 5)
        if not _writer.acquire(timeout=timeout):
            raise OperationalError("database is locked: another writer held it too long")
        self._holds_writer_lock = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer_lock()
            raise

    def _release_writer_lock(self) -> None:
        if self._holds_writer_lock:
            self._holds_writer_lock = False
            _writer.release()

    def _end(self, end: Callable[[], None]) -> None:
        """Commit, rollback or close, then let the next writer in, whatever happened."""
        try:
            end()
        finally:
            self._release_writer_lock()

    def _commit(self) -> None:
        self._end(super()._commit)

    def _rollback(self) -> None:
        self._end(super()._rollback)

    def _close(self) -> None:
        self._end(super()._close)


class SyncMiddlewareASGIHandler(ASGIHandler):
    """Django's ASGI handler with the middleware loaded in sync mode, and the chain
    and the view run in one `sync_to_async` hop (in async mode each `process_request`
    and `process_response` of a sync-first middleware is a hop of its own).

    `ASGIHandler.__init__` does nothing but load the middleware in async mode, so it
    is skipped for `BaseHandler.__init__`; `ASGIHandler.handle` gets the response
    from `get_response_async`, replaced here. Django offers no setting for either."""

    def __init__(self) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """In a context of its own: when the client goes away, asgiref cancels
        this call while the thread may still be inside an async view's
        `async_to_sync`, and would copy that thread's context back into the
        request's, executor of the view included. The request's `request_finished`
        would then be sent to that finished executor and fail."""
        call = sync_to_async(
            self.get_response, thread_sensitive=True, context=contextvars.copy_context()
        )
        return await call(request)
