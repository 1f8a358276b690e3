"""Running work: each enqueued unit takes a provider slot, claims the item the
scheduler finds fairest then (generation.scheduling), and runs it with a lease
heartbeat, throttled progress and a guaranteed terminal state (I3)."""

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import close_old_connections
from django.utils import timezone

from generation import events, leases, scheduling, state
from generation.engine import provider_slot
from generation.errors import GenerationError, TookTooLong, public_error_for
from generation.models import GenerationItem
from generation.providers import GenerationRequest, get_provider
from generation.providers.base import activity_reported_to
from generation.results import ItemRun
from roadmaps.models import ContentType, Roadmap

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 1.0
# How often a running attempt checks that it still holds its pair: a cancel (or a
# reset, a take-over, its roadmap deleted) stops the provider request within this.
FENCE_CHECK_SECONDS = 0.5


def in_worker_thread(function):
    """Run ORM work of background tasks in the loop's own executor threads, not in
    asgiref's one process-wide thread: concurrent items do not queue behind each
    other or behind requests, and a loop that stops mid-call strands only its own
    threads (publish-after-commit calls back into the loop that made the call).
    These threads live as long as the process, so each call first checks the
    thread's connection, as Django does per request."""
    return database_sync_to_async(function, thread_sensitive=False)


class WaitingWork:
    """How many enqueued units this process holds that wait for a provider slot.
    While any wait, queued items are alive (maintenance renews their leases), as
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


def queue_cutoff() -> datetime:
    """Queued items of tasks started before this are not renewed: a lost unit of
    work still ends once GENERATION_MAX_QUEUE_SECONDS have passed (I3)."""
    return timezone.now() - timedelta(seconds=settings.GENERATION_MAX_QUEUE_SECONDS)


def heartbeat_interval() -> float:
    return max(0.05, min(settings.GENERATION_LEASE_SECONDS / 4, 10.0))


def sweep_interval() -> float:
    """At least every half lease, at most every 30 s (DESIGN §8)."""
    return max(0.1, min(settings.GENERATION_LEASE_SECONDS / 2, 30.0))


@dataclass(frozen=True)
class ItemContext:
    request: GenerationRequest
    roadmap: Roadmap
    concept_id: str
    concept_name: str
    position: int
    total: int


def _load_context(run: ItemRun) -> ItemContext:
    item = GenerationItem.objects.select_related("task__roadmap", "content__concept").get(
        pk=run.item_id
    )
    roadmap, concept = item.task.roadmap, item.content.concept
    preferences = {**roadmap.preferences, **item.task.preferences}
    return ItemContext(
        request=GenerationRequest(
            roadmap_title=roadmap.title,
            roadmap_goal=roadmap.goal,
            concept_name=concept.name,
            concept_description=concept.description,
            preferences={k: str(v) for k, v in preferences.items()},
        ),
        roadmap=roadmap,
        concept_id=concept.concept_id,
        concept_name=concept.name,
        position=item.position,
        total=item.task.total,
    )


# One claim at a time per process: concurrent claimers would all pick the same
# fairest item, and all but one would begin it in vain and pick again.
_claiming = threading.Lock()


def claim_next() -> ItemRun | None:
    """Begin the fairest queued item; None when nothing waits. An item another
    process claimed first, or deleted with its roadmap meanwhile, is passed over."""
    taken: set[int] = set()
    with _claiming:
        while (next_item := scheduling.next_item(exclude=taken)) is not None:
            try:
                run = state.begin_item(
                    item_id=next_item.item_id,
                    task_id=next_item.task_id,
                    roadmap_id=next_item.roadmap_id,
                )
            except ObjectDoesNotExist:
                run = None
            if run is not None:
                return run
            taken.add(next_item.item_id)
    return None


async def run_next() -> None:
    """One unit of work: wait for a provider slot, then run whichever item is
    fairest at that moment, not necessarily one of the start that enqueued it.
    A roadmap deleted under its work takes the work's rows with it: a normal end."""
    waiting_work.add(1)
    waited = True
    run = None
    try:
        async with provider_slot():
            waiting_work.add(-1)
            waited = False
            run = await in_worker_thread(claim_next)()
            if run is not None:
                await _execute(run)
    except ObjectDoesNotExist:
        task = f"task {run.task_id}" if run else "a task"
        logger.info("The roadmap of %s was deleted under its work; stopped", task)
    finally:
        if waited:
            waiting_work.add(-1)


class Progress:
    """Whether the provider showed signs of life since the last heartbeat."""

    def __init__(self) -> None:
        self.seen = False

    def mark(self) -> None:
        self.seen = True

    def take(self) -> bool:
        seen, self.seen = self.seen, False
        return seen


async def _execute(run: ItemRun) -> None:
    context = await in_worker_thread(_load_context)(run)
    work = asyncio.current_task()
    fenced = asyncio.Event()
    progress = Progress()
    beats = asyncio.create_task(_heartbeat(run, work, fenced, progress))
    try:
        with activity_reported_to(progress.mark):
            draft, model_name = await _within_deadline(_generate(run, context))
    except asyncio.CancelledError:
        if not fenced.is_set():
            raise
        logger.info("Attempt %s of task %s was fenced out; stopped", run.attempt_id, run.task_id)
        return
    except Exception as exc:
        failure = exc
    else:
        failure = None
    finally:
        # Before any terminal write: a beat after it would see the pair moved on,
        # take it for fencing and cancel this very task mid-write.
        beats.cancel()
        await asyncio.gather(beats, return_exceptions=True)
    if failure is not None:
        error = public_error_for(failure)
        logger.warning(
            "Generation failed in task %s (%s, content %s): %s",
            run.task_id,
            run.content_type,
            run.content_id,
            error.detail or failure,
            exc_info=not isinstance(failure, GenerationError),
        )
        await in_worker_thread(state.fail_item)(run, error=error)
        return
    try:
        await in_worker_thread(state.complete_item)(run, draft=draft, model_name=model_name)
    except ObjectDoesNotExist:
        raise  # its roadmap was deleted: nothing to store, nothing to fail
    except Exception as exc:
        # Storage or database trouble while saving: fail now rather than wait out
        # the lease and report a lost worker.
        logger.exception("Could not store the result of task %s", run.task_id)
        await in_worker_thread(state.fail_item)(run, error=public_error_for(exc))


async def _within_deadline(generation):
    """Every attempt ends by GENERATION_DEADLINE_SECONDS, whatever its provider
    does (slow rounds, a server trickling bytes): then the pair fails, retryable."""
    try:
        async with asyncio.timeout(settings.GENERATION_DEADLINE_SECONDS):
            return await generation
    except TimeoutError as exc:
        raise TookTooLong(f"after {settings.GENERATION_DEADLINE_SECONDS} s") from exc


async def _generate(run: ItemRun, context: ItemContext):
    provider = get_provider()
    if run.content_type == ContentType.TUTORIAL:
        last_sent = 0.0

        async def on_progress(percentage: int) -> None:
            nonlocal last_sent
            now = time.monotonic()
            if now - last_sent < PROGRESS_INTERVAL_SECONDS and percentage < 100:
                return
            last_sent = now
            await events.concept_progress(
                task_id=run.task_id,
                roadmap=context.roadmap,
                concept_id=context.concept_id,
                concept_name=context.concept_name,
                content_type=run.content_type,
                position=context.position,
                total=context.total,
                percentage=percentage,
            )

        return await provider.tutorial(context.request, on_progress)
    if run.content_type == ContentType.RESOURCES:
        return await provider.resources(context.request)
    return await provider.quiz(context.request)


async def _heartbeat(
    run: ItemRun, work: asyncio.Task, fenced: asyncio.Event, progress: Progress
) -> None:
    """Renew the lease after progress, every heartbeat interval; in between, every
    FENCE_CHECK_SECONDS, only look whether the attempt still holds its pair. Once
    it does not (cancelled, reset, taken over, deleted), cancel the work: the
    provider's stream is closed with it, and so is its HTTP connection."""
    last_beat = time.monotonic()
    while True:
        await asyncio.sleep(min(FENCE_CHECK_SECONDS, heartbeat_interval()))
        beat = time.monotonic() - last_beat >= heartbeat_interval()
        try:
            # A beat without progress renews nothing: it only answers whether held.
            progressed = progress.take() if beat else False
            alive = await in_worker_thread(leases.heartbeat)(run, progressed=progressed)
        except Exception:
            logger.warning("Heartbeat failed for task %s", run.task_id, exc_info=True)
            continue
        if beat:
            last_beat = time.monotonic()
        if not alive:
            fenced.set()
            work.cancel()
            return


def maintain(*, renew_queued_since: datetime | None = None) -> int:
    """One maintenance round: keep waiting work alive, then fail stale work.
    Queued items are alive while this process holds work waiting for a slot, or
    (Celery) while the broker still has messages: then those of tasks started
    since `renew_queued_since` are renewed. Returns how many were recovered."""
    close_old_connections()
    if renew_queued_since is None and waiting_work:
        renew_queued_since = queue_cutoff()
    if renew_queued_since is not None:
        leases.renew_queued(enqueued_since=renew_queued_since)
    return state.recover_stale()


MAINTENANCE_TICK_SECONDS = 1.0


async def maintain_forever() -> None:
    """A round now, then whenever sweep_interval() has passed; the interval is
    re-read every tick, so a changed lease setting takes effect without a restart."""
    last_round = -float("inf")
    while True:
        if time.monotonic() - last_round >= sweep_interval():
            last_round = time.monotonic()
            try:
                recovered = await in_worker_thread(maintain)()
                if recovered:
                    logger.warning("Recovered %d stale generation(s)", recovered)
            except Exception:
                logger.warning("Stale recovery round failed", exc_info=True)
        await asyncio.sleep(min(MAINTENANCE_TICK_SECONDS, sweep_interval()))
