"""Running one item: each enqueued unit takes a provider slot, claims the item the
scheduler finds fairest then (generation.scheduling), and runs it with a lease
heartbeat, throttled progress and a guaranteed terminal state (I3). The runner
opens the transactions of a run's transitions (begin, complete, fail)."""

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.utils import timezone

from generation import budgets, events, liveness, scheduling, state
from generation.drafts import LiveDraft
from generation.engine import in_worker_thread, provider_slot, write_slot
from generation.errors import GenerationError, TookTooLong, public_error_for
from generation.liveness import Progress
from generation.models import GenerationItem
from generation.providers import GenerationRequest, get_provider
from generation.providers.base import activity_reported_to
from generation.providers.metering import limited_to, usage_reported_to
from generation.results import ItemRun
from generation.schemas import Quiz, ResourceList, TutorialDraft
from generation.tutorial_files import delete_tutorial, save_tutorial
from generation.usage import AttemptUsage
from roadmaps.models import ConceptContent, ContentType, Roadmap

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class ItemContext:
    request: GenerationRequest
    roadmap: Roadmap
    concept_id: str
    concept_name: str
    position: int
    total: int
    owner_id: int


def _load_context(run: ItemRun) -> ItemContext:
    item = GenerationItem.objects.select_related("task__roadmap", "content__concept").get(
        pk=run.item_id
    )
    roadmap, concept = item.task.roadmap, item.content.concept
    return ItemContext(
        request=GenerationRequest.about(
            roadmap=roadmap, concept=concept, preferences=item.task.preferences
        ),
        roadmap=roadmap,
        concept_id=concept.concept_id,
        concept_name=concept.name,
        position=item.position,
        total=item.task.total,
        owner_id=item.task.owner_id,
    )


# One claim at a time per process: concurrent claimers would all pick the same
# fairest item, and all but one would begin it in vain and pick again.
_claiming = threading.Lock()


def begin_item(*, item_id: int, task_id: str | None = None, roadmap_id=None) -> ItemRun | None:
    """Begin a queued item (state.begin_item) with a fresh lease; None when it is
    no longer queued."""
    now = timezone.now()
    with transaction.atomic():
        return state.begin_item(
            item_id=item_id,
            task_id=task_id,
            roadmap_id=roadmap_id,
            now=now,
            lease_until=liveness.deadline(now),
        )


def complete_item(
    run: ItemRun,
    *,
    draft: TutorialDraft | ResourceList | Quiz,
    model_name: str,
    spent: AttemptUsage | None = None,
) -> bool:
    """Store the new version and mark the pair completed, unless this attempt was
    superseded, in which case the result is dropped (I4). Returns whether it landed.

    The tutorial file is written before the transaction, so no storage I/O runs
    under the roadmap lock; a result that does not land deletes its file."""
    with _spend_outlives_roadmap(spent):
        return _complete_item(run, draft=draft, model_name=model_name, spent=spent)


def _complete_item(
    run: ItemRun,
    *,
    draft: TutorialDraft | ResourceList | Quiz,
    model_name: str,
    spent: AttemptUsage | None,
) -> bool:
    content = ConceptContent.objects.select_related("concept").get(pk=run.content_id)
    version = content.version + 1
    fields = {"model": model_name, "generated_at": timezone.now()}
    if spent is not None and spent.requests:
        prompt_tokens, completion_tokens = spent.tokens
        fields |= {
            "provider": spent.requests[-1].provider,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        }
    if run.content_type == ContentType.TUTORIAL:
        fields |= {
            "title": draft.title,
            "summary": draft.summary,
            "content_ref": save_tutorial(content, markdown=draft.markdown, version=version),
            "payload": {},
        }
    else:
        fields |= {"payload": draft.model_dump(mode="json"), "summary": ""}
    landed = False
    try:
        with transaction.atomic():
            landed = state.complete_item(
                run, version=version, fields=fields, roadmap_id=content.roadmap_id
            )
            _settle(run, spent)  # spent even when the result is dropped
    finally:
        if not landed and "content_ref" in fields:
            delete_tutorial(fields["content_ref"])  # dropped or rolled back
    if not landed:
        logger.info("Dropped the late result of attempt %s (task %s)", run.attempt_id, run.task_id)
    return landed


def fail_item(run: ItemRun, *, error: GenerationError, spent: AttemptUsage | None = None) -> bool:
    """Mark the pair failed with a public message, fenced like complete_item."""
    with _spend_outlives_roadmap(spent), transaction.atomic():
        failed = state.fail_item(run, error=error)
        _settle(run, spent)
        return failed


def record_usage(spent: AttemptUsage) -> None:
    """The usage of an attempt that ends without an outcome of its own (fenced out)."""
    with transaction.atomic():
        _settle(spent.run, spent)


@contextmanager
def _spend_outlives_roadmap(spent: AttemptUsage | None) -> Iterator[None]:
    """The attempt's roadmap was deleted under it (after a cancel, before the fence
    stopped it): its outcome has nowhere to go and is dropped, but what it spent
    was spent, and counts against its user's budget all the same."""
    try:
        yield
    except ObjectDoesNotExist:
        if spent is not None:
            record_usage(spent)
        raise


def _settle(run: ItemRun, spent: AttemptUsage | None) -> None:
    """In the transaction of the attempt's end: its usage is recorded and its
    reservation released together, so the budget counts the tokens either way."""
    if spent is not None:
        spent.record()
    budgets.settle(run.item_id)


def claim_next() -> ItemRun | None:
    """Begin the fairest queued item; None when nothing waits. An item another
    process claimed first, or deleted with its roadmap meanwhile, is passed over."""
    taken: set[int] = set()
    with _claiming:
        while (next_item := scheduling.next_item(exclude=taken)) is not None:
            try:
                run = begin_item(
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
    liveness.waiting_work.add(1)
    waited = True
    run = None
    try:
        async with provider_slot():
            liveness.waiting_work.add(-1)
            waited = False
            run = await in_worker_thread(claim_next)()
            if run is not None:
                await _execute(run)
    except ObjectDoesNotExist:
        task = f"task {run.task_id}" if run else "a task"
        logger.info("The roadmap of %s was deleted under its work; stopped", task)
    finally:
        if waited:
            liveness.waiting_work.add(-1)


async def _execute(run: ItemRun) -> None:
    context = await in_worker_thread(_load_context)(run)
    output = LiveDraft(run, roadmap=context.roadmap, concept_id=context.concept_id)
    try:
        await _run_attempt(run, context, output)
    finally:
        await output.close()


async def _run_attempt(run: ItemRun, context: ItemContext, output: LiveDraft) -> None:
    work = asyncio.current_task()
    fenced = asyncio.Event()
    progress = Progress()
    beats = asyncio.create_task(_heartbeat(run, work, fenced, progress))
    spent = AttemptUsage(run, user_id=context.owner_id, roadmap_id=context.roadmap.pk)
    try:
        with (
            activity_reported_to(progress.mark),
            usage_reported_to(spent.add),
            limited_to(run.reserved_tokens or None),
        ):
            draft, model_name = await _within_deadline(_generate(run, context, output))
            await output.settle(draft)
    except asyncio.CancelledError:
        if not fenced.is_set():
            raise
        logger.info("Attempt %s of task %s was fenced out; stopped", run.attempt_id, run.task_id)
        await _final_write(record_usage, spent)
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
    # Dropped before the terminal write: a socket that subscribes after the
    # outcome is published never gets a snapshot of a pair that has ended.
    await output.close()
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
        await _final_write(fail_item, run, error=error, spent=spent)
        return
    try:
        await _final_write(complete_item, run, draft=draft, model_name=model_name, spent=spent)
    except ObjectDoesNotExist:
        raise  # its roadmap was deleted: nothing to store, nothing to fail
    except Exception as exc:
        # Storage or database trouble while saving: fail now rather than wait out
        # the lease and report a lost worker.
        logger.exception("Could not store the result of task %s", run.task_id)
        await _final_write(fail_item, run, error=public_error_for(exc), spent=spent)


async def _final_write[**P, R](write: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """The attempt's last write, one at a time on this loop (engine.write_slot)."""
    async with write_slot():
        return await in_worker_thread(write)(*args, **kwargs)


async def _within_deadline(generation):
    """Every attempt ends by GENERATION_DEADLINE_SECONDS, whatever its provider
    does (slow rounds, a server trickling bytes): then the pair fails, retryable."""
    try:
        async with asyncio.timeout(settings.GENERATION_DEADLINE_SECONDS):
            return await generation
    except TimeoutError as exc:
        raise TookTooLong(f"after {settings.GENERATION_DEADLINE_SECONDS} s") from exc


async def _generate(run: ItemRun, context: ItemContext, output: LiveDraft):
    provider = get_provider()
    output.written_by(provider)
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

        return await provider.tutorial(context.request, on_progress, output)
    if run.content_type == ContentType.RESOURCES:
        return await provider.resources(context.request, output)
    return await provider.quiz(context.request, output)


async def _heartbeat(
    run: ItemRun, work: asyncio.Task, fenced: asyncio.Event, progress: Progress
) -> None:
    """Until cancelled, the process's fence (liveness.Fence) beats for this attempt
    with every other running one, one query a round, renewing its lease after
    progress. Once the attempt no longer holds its pair (cancelled, reset, taken
    over, deleted), cancel the work: the provider's stream is closed with it, and
    so is its HTTP connection."""
    await liveness.fence.until_lost(run, progress)
    fenced.set()
    work.cancel()
