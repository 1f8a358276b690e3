"""Liveness: how live work proves it is alive, and how work nobody vouches for ends (I3).

A `generating` row carries `lease_expires_at`. A running attempt renews it with
each heartbeat that follows progress (a request sent, bytes received): the
process's `fence` beats for all its running attempts at once, one query a round,
and tells an attempt that lost its pair to stop. Queued work is renewed by the
sweep while it is known to be waiting (this process still holds work to run, or
the broker still has messages). A row whose lease runs out
(`ConceptContent.objects.expired`) is failed by the sweep: one round (`sweep`),
run by an async driver on the in-process engine's loops (`sweep_forever`,
registered in AppConfig.ready) and by a thread driver in each Celery worker
(`Sweeper`). Renewals never change a status, so they are not transitions of the
state machine.

In a Celery worker, work waiting in the broker queue is held by no process. With a
long backlog the lease would run out while the messages are still safely queued,
so each round first asks the broker how many messages wait in the queues this
worker consumes: while there are any, the leases of all queued items are renewed.
Once the queues are empty an item still `queued` has no unit of work left to run
it (a lost message), and its lease is left to expire, which fails it. A
redelivered message is a spare unit of work: it runs whatever is fairest, or
nothing (docs/decisions/0006-fair-scheduling.md). If the broker cannot be asked,
nothing is renewed: being wrongly failed is recoverable by a retry, a pair stuck
in `generating` is not.
"""

import asyncio
import logging
import math
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone
from kombu.exceptions import ChannelError

from generation import state
from generation.engine import in_worker_thread
from generation.models import GenerationItem, ItemState
from generation.results import ItemRun
from roadmap_project.patches.celery import consumed_queues
from roadmaps.models import ConceptContent, ConceptContentQuerySet, ContentStatus

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

# How often the async driver looks whether a round is due: the interval is re-read
# every tick, so a changed lease setting takes effect without a restart.
SWEEP_TICK_SECONDS = 1.0
# How often the fence looks whether each running attempt still holds its pair: a
# cancel (or a reset, a take-over, its roadmap deleted) stops the provider request
# within this.
FENCE_CHECK_SECONDS = 0.5


# --- timings -------------------------------------------------------------------


def deadline(now: datetime | None = None) -> datetime:
    """When a lease taken or renewed now runs out."""
    return (now or timezone.now()) + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)


def heartbeat_interval() -> float:
    return max(0.05, min(settings.GENERATION_LEASE_SECONDS / 4, 10.0))


def fence_check_interval() -> float:
    return min(FENCE_CHECK_SECONDS, heartbeat_interval())


def sweep_interval() -> float:
    """At least every half lease, at most every 30 s (DESIGN §8)."""
    return max(0.1, min(settings.GENERATION_LEASE_SECONDS / 2, 30.0))


def queue_cutoff() -> datetime:
    """Queued items of tasks started before this are not renewed: a lost unit of
    work still ends once GENERATION_MAX_QUEUE_SECONDS have passed."""
    return timezone.now() - timedelta(seconds=settings.GENERATION_MAX_QUEUE_SECONDS)


# --- renewal -------------------------------------------------------------------


class WaitingWork:
    """How many enqueued units this process holds that wait for a provider slot.
    While any wait, queued items are alive (the sweep renews their leases), as
    they are while a broker still has messages."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return self._count > 0

    def add(self, delta: int) -> None:
        with self._lock:
            self._count += delta


waiting_work = WaitingWork()


def renew_queued(*, enqueued_since: datetime) -> int:
    """Renew the leases of the queued items of every task started since a time:
    one statement per round, however many items wait. Rows another transaction
    is changing are skipped, not waited for, so renewals never take part in a
    deadlock."""
    items = GenerationItem.objects.filter(
        state=ItemState.QUEUED, task__created_at__gte=enqueued_since
    )
    with transaction.atomic():
        renewable = ConceptContent.objects.select_for_update(skip_locked=True).filter(
            status=ContentStatus.GENERATING, attempt_id__in=items.values("attempt_id")
        )
        return ConceptContent.objects.filter(pk__in=renewable.values("pk")).update(
            lease_expires_at=deadline()
        )


def waiting_messages(app: "Celery", queues: Iterable[str]) -> int:
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


def broker_backlog_cutoff(app: "Celery") -> datetime | None:
    """While the broker still holds messages, queued items enqueued after the
    returned time are alive; None when the queues are empty (or cannot be asked)."""
    try:
        backlog = waiting_messages(app, consumed_queues(app))
    except Exception:
        logger.warning("Could not count the broker's waiting messages", exc_info=True)
        return None
    return queue_cutoff() if backlog else None


# --- running attempts: the fence -----------------------------------------------


def heartbeat(runs: Collection[ItemRun], *, renewing: Collection[ItemRun] = ()) -> set[ItemRun]:
    """One beat of running attempts, however many: renew the leases of `renewing`
    (they showed progress since their last beat; without progress a lease runs
    down, so a hung call is failed by the sweep even while its process lives),
    then answer which of `runs` still hold their pair. One query, two with
    renewals. An attempt missing from the answer was fenced out (cancelled,
    reset, taken over, its roadmap deleted)."""
    if renewing:
        _holding(renewing).update(lease_expires_at=deadline())
    held = set(_holding(runs).values_list("pk", "attempt_id"))
    return {run for run in runs if (run.content_id, run.attempt_id) in held}


def _holding(runs: Collection[ItemRun]) -> "ConceptContentQuerySet":
    """`held_by` for many attempts at once. Matching the pks and the attempt ids
    separately is exact: a begun item's attempt id is its own, on one row."""
    return ConceptContent.objects.filter(
        pk__in=[run.content_id for run in runs],
        status=ContentStatus.GENERATING,
        attempt_id__in=[run.attempt_id for run in runs],
    )


class Progress:
    """When an attempt's provider last showed signs of life (a request sent, bytes
    received). Written on the attempt's event loop and read by the fence's thread:
    one float, replaced whole, so it needs no lock."""

    def __init__(self) -> None:
        self.at = -math.inf

    def mark(self) -> None:
        self.at = time.monotonic()


@dataclass(eq=False)
class Watch:
    """A running attempt the fence beats for, and the event that tells it, on its
    own loop, that it lost its pair."""

    run: ItemRun
    progress: Progress
    loop: asyncio.AbstractEventLoop
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    last_beat: float = field(default_factory=time.monotonic)
    renewed_through: float = -math.inf  # progress up to here already renewed the lease


class Fence:
    """The running attempts of this process, beaten for together by one thread,
    whatever event loop each runs on (the in-process engine's one, a Celery
    worker's one per thread). Every fence_check_interval(), one `heartbeat`
    renews the leases of the attempts whose beat is due (every heartbeat
    interval) and that showed progress since their last one, and answers which
    attempts still hold their pair; one that does not is told once and
    forgotten. Like notifications.auth.Sentry for sockets: one query a round
    however many attempts run, instead of one per attempt."""

    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def until_lost(self, run: ItemRun, progress: Progress) -> None:
        """Return once `run` no longer holds its pair; until then, or until the
        caller is cancelled, its lease is renewed after progress."""
        watch = Watch(run, progress, asyncio.get_running_loop())
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="generation-fence", daemon=True
                )
                self._thread.start()
        try:
            await watch.lost.wait()
        finally:
            with self._lock:
                self._watches.discard(watch)

    def _run(self) -> None:
        try:
            while True:
                time.sleep(fence_check_interval())
                with self._lock:
                    if not self._watches:
                        self._thread = None
                        return
                try:
                    self.check()
                except Exception:
                    logger.warning("Checking the running attempts failed; retrying", exc_info=True)
        finally:
            connections.close_all()

    def check(self) -> None:
        """One round: renew the due leases that followed progress, then tell every
        attempt that lost its pair. A round that fails renews nothing and tells
        nobody; the next one beats for the same attempts."""
        with self._lock:
            watches = list(self._watches)
        if not watches:
            return
        now = time.monotonic()
        due = [w for w in watches if now - w.last_beat >= heartbeat_interval()]
        renewing = [w.run for w in due if w.progress.at > w.renewed_through]
        close_old_connections()
        held = heartbeat([w.run for w in watches], renewing=renewing)
        for watch in due:
            watch.last_beat = watch.renewed_through = now
        for watch in watches:
            if watch.run in held:
                continue
            with self._lock:
                if watch not in self._watches:  # its attempt ended meanwhile
                    continue
                self._watches.discard(watch)
            try:
                watch.loop.call_soon_threadsafe(watch.lost.set)
            except RuntimeError:  # its loop has closed: nobody is left to tell
                pass


fence = Fence()


# --- the sweep -----------------------------------------------------------------


def sweep(app: "Celery | None" = None) -> int:
    """One round of either driver (and of services.recover_stale): keep waiting
    work alive, then fail every generation whose lease expired (its worker died,
    its message was lost, or it hung), one transaction per pair. Queued items are
    alive while this process holds work waiting for a slot, or (a Celery worker's
    `app`) while the broker still has messages. Safe to run anywhere, any number
    of times. Returns how many generations were failed."""
    queued_since = broker_backlog_cutoff(app) if app is not None else None
    if queued_since is None and waiting_work:
        queued_since = queue_cutoff()
    if queued_since is not None:
        renew_queued(enqueued_since=queued_since)
    now = timezone.now()
    stale = ConceptContent.objects.expired(now).values_list("pk", "roadmap_id", "attempt_id")
    recovered = 0
    for content_id, roadmap_id, attempt_id in stale:
        with transaction.atomic():
            recovered += state.fail_expired(
                content_id=content_id, roadmap_id=roadmap_id, attempt_id=attempt_id, now=now
            )
    if recovered:
        logger.warning("Recovered %d stale generation(s)", recovered)
    return recovered


# Rounds the async driver has finished in this process: a loop's first runs as it
# starts serving, and a test that fails leases itself waits for it instead of racing it.
sweep_rounds = 0


async def sweep_forever() -> None:
    """The async driver (the in-process engine runs it on each of its loops): a
    round now, then whenever sweep_interval() has passed. Each round runs in a
    worker thread, which checks its connection first as Django does per request."""
    global sweep_rounds
    last_round = -float("inf")
    while True:
        if time.monotonic() - last_round >= sweep_interval():
            last_round = time.monotonic()
            try:
                await in_worker_thread(sweep)()
            except Exception:
                logger.warning("Stale recovery round failed", exc_info=True)
            sweep_rounds += 1
        await asyncio.sleep(min(SWEEP_TICK_SECONDS, sweep_interval()))


class Sweeper:
    """The thread driver (a Celery worker process): a daemon thread running a
    round at start and then every sweep interval."""

    def __init__(self, app: "Celery") -> None:
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
                close_old_connections()
                try:
                    sweep(self.app)
                except Exception:
                    logger.warning("Stale recovery round failed", exc_info=True)
                self._stopped.wait(sweep_interval())
        finally:
            connections.close_all()
