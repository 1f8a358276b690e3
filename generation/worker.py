"""Maintenance inside a Celery worker process (the distributed engine).

A worker sweeps stale generations when it starts and then every `sweep_interval()`,
like the embedded engine does (DESIGN §7, I3). One thing differs: work waiting in
the broker queue is held by no process, so no process can vouch for it. With a
long backlog the lease would run out while the messages are still safely queued,
and the sweep would fail live work. So each round first asks the broker how many
messages wait in the queues this worker consumes: while there are any, the leases
of all queued items are renewed. Once the queues are empty an item still `queued`
has no unit of work left to run it (a lost message), and its lease is left to
expire, which fails it (I3). A redelivered message is a spare unit of work: it runs
whatever is fairest, or nothing (docs/decisions/0006-fair-scheduling.md).

If the broker cannot be asked, nothing is renewed: being wrongly failed is
recoverable by a retry, a pair stuck in `generating` is not.
"""

import logging
import threading
from collections.abc import Iterable
from datetime import datetime

from celery import Celery
from django.db import close_old_connections, connections
from kombu.exceptions import ChannelError

from generation import runner

logger = logging.getLogger(__name__)


def consumed_queues(app: Celery) -> list[str]:
    """The queues this worker consumes (`-Q` narrows them), else the default queue."""
    names = list(app.amqp.queues.consume_from)
    return names or [app.conf.task_default_queue]


def waiting_messages(app: Celery, queues: Iterable[str]) -> int:
    """Messages waiting in the broker for any worker (not those already delivered
    and unacknowledged: their items run and heartbeat)."""
    total = 0
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1)
        channel = connection.default_channel
        for name in queues:
            try:
                total += channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError:
                continue  # Redis deletes an empty list: the queue does not exist yet.
    return total


def queued_work_cutoff(app: Celery) -> datetime | None:
    """While the broker still holds messages, queued items enqueued after the
    returned time are alive; None when the queues are empty (or cannot be asked)."""
    try:
        backlog = waiting_messages(app, consumed_queues(app))
    except Exception:
        logger.warning("Could not count the broker's waiting messages", exc_info=True)
        return None
    if not backlog:
        return None
    return runner.queue_cutoff()


def maintain_worker(app: Celery) -> int:
    """One round: keep queued work alive while it is queued, then fail stale work.
    Returns how many generations were recovered."""
    close_old_connections()
    return runner.maintain(renew_queued_since=queued_work_cutoff(app))


class Sweeper:
    """A daemon thread running `maintain_worker` at start and every sweep interval."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="generation-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    recovered = maintain_worker(self.app)
                    if recovered:
                        logger.warning("Recovered %d stale generation(s)", recovered)
                except Exception:
                    logger.warning("Stale recovery round failed", exc_info=True)
                self._stopped.wait(runner.sweep_interval())
        finally:
            connections.close_all()
