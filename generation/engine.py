"""The embedded task engine: a django.tasks backend that runs async task functions
on the server's own event loop (DESIGN §10), with no broker and no worker process.

The loop is captured when the ASGI application is first called. Outside a server
(management commands, tests calling services directly) a private loop runs in a
daemon thread instead, and `wait_until_idle()` lets a command wait for its work.
Apps register periodic coroutines (`run_on_each_loop`, from AppConfig.ready) that
the engine starts on every loop it runs work on. When daphne shuts down, the
engine's work is cancelled before the loop stops (`wind_down`); what it cut short
is failed by the lease (I3). The engine knows nothing of what the work does."""

import asyncio
import contextvars
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from traceback import format_exception
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError, TaskResult, TaskResultStatus
from django.tasks.signals import task_enqueued, task_finished, task_started
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
_periodic: list[Callable[[], Coroutine]] = []
type _SemaphoreOfEachLoop = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
_slots: _SemaphoreOfEachLoop = weakref.WeakKeyDictionary()
_write_slots: _SemaphoreOfEachLoop = weakref.WeakKeyDictionary()


def in_worker_thread(function: Callable) -> Callable:
    """Run ORM work of background tasks in the loop's own executor threads, not in
    asgiref's one process-wide thread: concurrent items do not queue behind each
    other or behind requests, and a loop that stops mid-call strands only its own
    threads (publish-after-commit calls back into the loop that made the call).
    These threads live as long as the process, so each call first checks the
    thread's connection, as Django does per request."""
    return database_sync_to_async(function, thread_sensitive=False)


def provider_slot() -> asyncio.Semaphore:
    """The cap on provider calls in flight (GENERATION_CONCURRENCY) for the work on
    one event loop: the whole process in the embedded engine, which runs all work
    on one loop. A Celery worker runs each task on a loop of its own; there the
    cap is the worker's thread count, set to the same number."""
    return _semaphore_of_loop(_slots, settings.GENERATION_CONCURRENCY)


def write_slot() -> asyncio.Semaphore:
    """One of the work's final writes (a result, a failure) at a time on each event
    loop. The loop serves every socket of the process, and each thread busy in
    the ORM takes a share of the one GIL from it: when a batch's streams ended
    together, the default executor's six threads storing results at once held
    back the text still streaming (the last seconds' chunk p99 at 500 streams,
    263-357 ms; mostly 94-186 with one writer: bench/performance_notes.md). On
    SQLite those writes queue for its one write lock anyway."""
    return _semaphore_of_loop(_write_slots, 1)


def _semaphore_of_loop(registry: _SemaphoreOfEachLoop, size: int) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    semaphore = registry.get(loop)
    if semaphore is None:
        semaphore = registry[loop] = asyncio.Semaphore(size)
    return semaphore


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


def run_on_each_loop(periodic: Callable[[], Coroutine]) -> None:
    """Register a coroutine function the engine starts, once, on every loop it
    runs work on (the server's, or a private one). Idempotent."""
    if periodic not in _periodic:
        _periodic.append(periodic)


def start_maintenance(loop: asyncio.AbstractEventLoop) -> None:
    """Start the registered periodic coroutines on this loop, once per loop."""
    if loop in _maintained:
        return
    _maintained.add(loop)
    for periodic in _periodic:
        _spawn(loop, periodic(), keep_in=_maintenance)


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
    """Runs each enqueued coroutine as an asyncio task and signals its start and
    end as Django's own backends do; results are not kept (the database rows are
    the results)."""

    supports_async_task = True
    supports_get_result = False

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        self.worker_id = get_random_string(32)

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
        task_enqueued.send(type(self), task_result=result)
        loop = _loop_for_work()
        start_maintenance(loop)
        _spawn(loop, self._run(result), keep_in=_work)
        return result

    async def _run(self, result: TaskResult) -> None:
        """A run the engine cancels (its wind-down) did not finish, so it sends no
        task_finished: its item is the lease's to fail."""
        started = timezone.now()
        object.__setattr__(result, "status", TaskResultStatus.RUNNING)
        object.__setattr__(result, "started_at", started)
        object.__setattr__(result, "last_attempted_at", started)
        result.worker_ids.append(self.worker_id)
        task_started.send(type(self), task_result=result)
        try:
            await result.task.func(*result.args, **result.kwargs)
        except Exception as exc:
            error = TaskError(
                exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                traceback="".join(format_exception(exc)),
            )
            result.errors.append(error)
            self._finish(result, TaskResultStatus.FAILED)
        else:
            self._finish(result, TaskResultStatus.SUCCESSFUL)

    def _finish(self, result: TaskResult, status: TaskResultStatus) -> None:
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "status", status)
        task_finished.send(type(self), task_result=result)
