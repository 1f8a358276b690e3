"""Maintenance inside a Celery worker process (the distributed engine).

A worker sweeps stale generations when it starts and then every `sweep_interval()`,
like the embedded engine does (DESIGN §7, I3). One thing differs: an item waiting
in the broker queue is held by no process, so no heartbeat renews its lease. With a
long backlog (another task's items ahead of it) the lease would run out while the
message is still safely queued, and the sweep would fail live work. So each round
first asks the broker how many messages wait in the queues this worker consumes:
while there are any, the leases of all queued items are renewed. Once the queues
are empty an item still `queued` has lost its message, and its lease is left to
expire, which fails it (a lost message, I3). A redelivered message of an item that
was failed meanwhile does nothing: `begin_item` ignores finished items (I4).

If the broker cannot be asked, nothing is renewed: being wrongly failed is
recoverable by a retry, a pair stuck in `generating` is not.
"""

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

from celery import Celery
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone
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
    # Bounded: a message lost while other traffic keeps the queue busy still
    # expires once its task is older than GENERATION_MAX_QUEUE_SECONDS (I3).
    return timezone.now() - timedelta(seconds=settings.GENERATION_MAX_QUEUE_SECONDS)


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
