"""The publish after commit, from a worker thread of an event loop that is going away."""

import asyncio
import concurrent.futures
import logging
import threading

from asgiref.sync import sync_to_async

from notifications import services
from notifications.models import Event


class DaemonThreads(concurrent.futures.Executor):
    """A daemon thread per call: a call stuck for good fails its test, and does not
    hold up the end of the run as an executor's threads would."""

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:
                future.set_exception(error)

        threading.Thread(target=run, daemon=True).start()
        return future


async def test_a_publish_its_closing_loop_cancels_before_it_starts_is_given_up_at_once(caplog):
    """asyncio.Runner.close (every test's loop, asyncio.run) cancels every task of
    its loop, one created a moment before and not yet started too: a publish handed
    over just then never runs. The thread that committed must not wait for it: it
    may hold the claim lock, and the closing loop waits for its threads."""
    loop = asyncio.new_event_loop()
    closing = threading.Event()

    def cancel_new_tasks_once_closing(loop, coroutine, **kwargs) -> asyncio.Task:
        task = asyncio.Task(coroutine, loop=loop, **kwargs)
        if closing.is_set():
            task.cancel()  # before its first step, as the closing loop does
        return task

    loop.set_task_factory(cancel_new_tasks_once_closing)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def commit() -> None:
        closing.set()
        services.publish([Event(topic="roadmap.1", type="status_changed", body={})])

    worker = sync_to_async(commit, thread_sensitive=False, executor=DaemonThreads())
    caplog.set_level(logging.INFO, logger=services.__name__)
    try:
        on_its_loop = asyncio.run_coroutine_threadsafe(worker(), loop)
        await asyncio.wait_for(asyncio.wrap_future(on_its_loop), timeout=5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    loop.close()
    assert "Not publishing 1 event(s): the event loop is stopping" in caplog.messages
