"""The embedded task engine: a django.tasks backend that runs async task functions
on the server's own event loop (DESIGN §10), with no broker and no worker process.

The loop is captured when the ASGI application is first called. Outside a server
(management commands, tests calling services directly) a private loop runs in a
daemon thread instead, and `wait_until_idle()` lets a command wait for its work.
When daphne shuts down, the engine's work is cancelled before the loop stops
(`wind_down`); what it cut short is failed by the lease (I3)."""

import asyncio
import contextvars
import logging
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from django.conf import settings
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskResult, TaskResultStatus
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.crypto import get_random_string

logger = logging.getLogger(__name__)

_server_loop: asyncio.AbstractEventLoop | None = None
_private_loop: asyncio.AbstractEventLoop | None = None
_private_thread: threading.Thread | None = None
_private_lock = threading.Lock()
_work: set[asyncio.Task] = set()
_maintenance: set[asyncio.Task] = set()
_maintained: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()
_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = (
    weakref.WeakKeyDictionary()
)


def provider_slot() -> asyncio.Semaphore:
    """The cap on provider calls in flight (GENERATION_CONCURRENCY) for the work on
    one event loop: the whole process in the embedded engine, which runs all work
    on one loop. A Celery worker runs each task on a loop of its own; there the
    cap is the worker's thread count, set to the same number."""
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(settings.GENERATION_CONCURRENCY)
    return slot


def capture_server_loop(app: Callable) -> Callable:
    """Wrap the ASGI application so the engine knows the server's loop."""

    async def application(scope, receive, send) -> Any:
        global _server_loop
        loop = asyncio.get_running_loop()
        if _server_loop is not loop:
            _server_loop = loop
            start_maintenance(loop)
            _wind_down_before_the_server_stops()
        return await app(scope, receive, send)

    return application


def start_maintenance(loop: asyncio.AbstractEventLoop) -> None:
    """Sweep stale generations at start and then periodically on this loop."""
    if loop in _maintained:
        return
    _maintained.add(loop)
    from generation.runner import maintain_forever

    _spawn(loop, maintain_forever(), keep_in=_maintenance)


def _loop_for_work() -> asyncio.AbstractEventLoop:
    if _server_loop is not None and not _server_loop.is_closed() and _server_loop.is_running():
        return _server_loop
    return _private()


def _private() -> asyncio.AbstractEventLoop:
    global _private_loop, _private_thread
    with _private_lock:
        if _private_loop is None or _private_loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="generation-engine", daemon=True
            )
            thread.start()
            _private_loop, _private_thread = loop, thread
    return _private_loop


def _spawn(loop: asyncio.AbstractEventLoop, coroutine, keep_in: set[asyncio.Task]) -> None:
    """Start the coroutine on the loop (from any thread), keeping a reference to
    the task until it ends so it is never garbage-collected mid-run."""

    def start() -> None:
        # A fresh context: background work must not inherit its enqueuer's context
        # variables (asgiref's executor and deadlock markers of a sync_to_async
        # caller, a request's ThreadSensitiveContext that ends with the response).
        task = loop.create_task(coroutine, context=contextvars.Context())
        keep_in.add(task)
        task.add_done_callback(keep_in.discard)
        task.add_done_callback(_log_crash)

    if _on_loop(loop):
        start()
    else:
        loop.call_soon_threadsafe(start)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("Background task crashed", exc_info=task.exception())


def wait_until_idle(timeout: float | None = None) -> bool:
    """Block (from a thread that is not the engine's loop) until no generation runs."""
    loop = _loop_for_work()

    async def idle() -> None:
        while True:
            pending = [t for t in _work if t.get_loop() is loop]
            if not pending:
                return
            await asyncio.wait(pending)

    future: Future = asyncio.run_coroutine_threadsafe(idle(), loop)
    try:
        future.result(timeout)
        return True
    except TimeoutError:
        return False


async def wind_down(thread_seconds: float) -> None:
    """Cancel the engine's work and sweeps on the running loop, then give its
    worker threads `thread_seconds` to finish the calls they are in: those calls
    may call back into this loop (publish after commit), which must still run.
    Work cut short stays `generating` until its lease ends (I3)."""
    loop = asyncio.get_running_loop()
    tasks = [task for task in (*_work, *_maintenance) if task.get_loop() is loop]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await loop.shutdown_default_executor(timeout=thread_seconds)


def stop_private_loop(timeout: float = 40.0) -> None:
    """Wind down the private loop and stop its thread; the next enqueue outside a
    server starts a fresh one. For whoever started work outside a server and must
    not leave it running (a test: its sweep would fail the rows of the next one)."""
    global _private_loop, _private_thread
    with _private_lock:
        loop, thread = _private_loop, _private_thread
        _private_loop = _private_thread = None
    if loop is None or loop.is_closed():
        return
    try:
        winding = asyncio.run_coroutine_threadsafe(wind_down(timeout / 2), loop)
        winding.result(timeout=timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


# Daphne's own wait for applications at shutdown is 10 s; the engine takes less.
SERVER_SHUTDOWN_SECONDS = 5.0


def _wind_down_before_the_server_stops() -> None:
    """Under daphne the loop is Twisted's reactor, which stops it right after its
    shutdown triggers: wind the engine down in one (Twisted waits for it). Only
    if the reactor is already installed: importing it would install one."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    async def before_shutdown() -> None:
        await wind_down(SERVER_SHUTDOWN_SECONDS)
        logger.info("Generation engine wound down; the server stops")

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromFuture(asyncio.ensure_future(before_shutdown()))
    )


class InProcessBackend(BaseTaskBackend):
    """Runs each enqueued coroutine as an asyncio task; results are not kept
    (the database rows are the results)."""

    supports_async_task = True
    supports_get_result = False

    def enqueue(self, task, args, kwargs) -> TaskResult:
        self.validate_task(task)
        result = TaskResult(
            task=task,
            id=get_random_string(32),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        loop = _loop_for_work()
        start_maintenance(loop)
        _spawn(loop, task.func(*args, **kwargs), keep_in=_work)
        task_enqueued.send(type(self), task_result=result)
        return result
