"""How many WebSocket connections the whole deployment has open, for GET /metrics
(`roadmap_websocket_connections`), whichever server process a scrape reaches.

Each server process counts its own sockets (every consumer, from its handshake
until it ends) and, while it has any, writes that count to the database every
NOTIFICATIONS_CONNECTIONS_REPORT_SECONDS in a row of its own (host, pid and a
random suffix); when its last socket has gone it deletes the row and stops
writing. The total is the asking process's exact count plus the fresh rows of
the others: a row not refreshed for STALE_AFTER_REPORTS intervals belongs to a
process that stopped or died, and counts for nothing (reporting processes delete
such rows). So another process's sockets show up to one interval late, and a
killed process's for at most STALE_AFTER_REPORTS intervals after it died.

The database rather than Redis: every other figure of /metrics is read there, it
is there in every deployment (the embedded one has no Redis), and a Redis outage
leaves the figure intact, as it leaves generations (I6). A process without
sockets (a Celery worker, an idle server) writes nothing."""

import asyncio
import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from notifications.models import ConnectionCount

logger = logging.getLogger(__name__)

STALE_AFTER_REPORTS = 3


def report_interval() -> float:
    return settings.NOTIFICATIONS_CONNECTIONS_REPORT_SECONDS


def fresh_since(now: datetime) -> datetime:
    """Rows reported before this are of processes that stopped reporting."""
    return now - timedelta(seconds=STALE_AFTER_REPORTS * report_interval())


class ProcessSockets:
    """The open sockets of this process, and the task that reports their count.
    Sockets open and close on event loops; the count is read by request threads."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._pid = 0
        self._name = ""
        self._reporting: asyncio.Task | None = None

    @property
    def name(self) -> str:
        """This process's row; a forked child names its own."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._name = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
        return self._name

    def opened(self) -> None:
        with self._lock:
            self.count += 1
        reporting = self._reporting
        if reporting is None or reporting.done() or reporting.get_loop().is_closed():
            self._reporting = asyncio.get_running_loop().create_task(self._report_periodically())

    def closed(self) -> None:
        with self._lock:
            self.count -= 1

    async def _report_periodically(self) -> None:
        """A report every interval until one finds no socket left (it deletes the
        row); the next socket starts the reports again."""
        while True:
            await asyncio.sleep(report_interval())
            try:
                await database_sync_to_async(report)(self.name, self.count)
            except Exception:
                # The database is down, say: the row goes stale, the next round retries.
                logger.warning("Reporting the open WebSocket count failed", exc_info=True)
                continue
            if not self.count:
                return


sockets = ProcessSockets()


def report(process: str, count: int, *, now: datetime | None = None) -> None:
    """Write one process's count (or delete its row at 0), and delete the rows of
    processes that stopped reporting."""
    now = now or timezone.now()
    if count:
        ConnectionCount.objects.bulk_create(
            [ConnectionCount(process=process, connections=count, reported_at=now)],
            update_conflicts=True,
            unique_fields=["process"],
            update_fields=["connections", "reported_at"],
        )
    else:
        ConnectionCount.objects.filter(process=process).delete()
    ConnectionCount.objects.filter(reported_at__lt=fresh_since(now)).delete()


def open_connections(*, now: datetime | None = None) -> int:
    """The deployment's open WebSocket connections: this process's own count and
    the fresh reports of the others, in one query."""
    now = now or timezone.now()
    others = (
        ConnectionCount.objects.filter(reported_at__gte=fresh_since(now))
        .exclude(process=sockets.name)
        .aggregate(total=Sum("connections", default=0))["total"]
    )
    return sockets.count + others
