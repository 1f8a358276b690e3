"""Writing events: stored in the caller's transaction, published after commit (I5)."""

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.db.models import F, Max, OuterRef, Q, Subquery
from django.db.models.functions import Greatest
from django.utils import timezone

from notifications import bounds
from notifications.models import Event, EventCounter
from roadmap_project.patches.asgiref import serving_loop

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 2.0


def feed_group(kind: str, key: str) -> str:
    """The channel-layer group of a stream or a topic (kind "stream" or "topic")."""
    return f"{kind}.{key}"


def _next_seq(key: str, count: int = 1) -> int:
    """Take the counter row's lock and the last of `count` new numbers; must run in
    a transaction. One statement that both SQLite and PostgreSQL speak, where the
    ORM needs an UPDATE, a SELECT and, on a stream's first event, an INSERT: the
    row is created by the upsert, so two first events of one key never race into
    an IntegrityError, and starting a task needs no counter row of its own."""
    quote = connection.ops.quote_name
    table = quote(EventCounter._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({quote('key')}, {quote('last_seq')}, {quote('closed')}) "
            f"VALUES (%s, %s, %s) ON CONFLICT ({quote('key')}) "
            f"DO UPDATE SET {quote('last_seq')} = {table}.{quote('last_seq')} + %s "
            f"RETURNING {quote('last_seq')}",
            [key, count, False, count],
        )
        return cursor.fetchone()[0]


def record_event(
    *, topic: str, type: str, body: dict[str, Any], stream: str | None = None, final: bool = False
) -> Event:
    """Store an event in the current transaction and publish it once that commits.

    Lock order is topic, then stream, in every caller, so writers never deadlock."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("record_event must run inside the transaction of its state change")
    topic_seq = _next_seq(topic)
    seq = _next_seq(stream) if stream else None
    event = Event.objects.create(
        topic=topic, topic_seq=topic_seq, stream=stream, seq=seq, type=type, body=body, final=final
    )
    if final and stream:
        EventCounter.objects.filter(key=stream).update(closed=True)
    transaction.on_commit(lambda: publish([event]))
    return event


def record_topic_events(*, topic: str, type: str, bodies: list[dict[str, Any]]) -> list[Event]:
    """Store events of one topic, outside any stream, in the current transaction:
    one lock of the topic's counter and one bulk insert (ids in list order), then
    publish them in that order once the transaction commits."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("record_topic_events must run inside the transaction of its change")
    if not bodies:
        return []
    first = _next_seq(topic, count=len(bodies)) - len(bodies) + 1
    events = Event.objects.bulk_create(
        [
            Event(topic=topic, topic_seq=topic_seq, type=type, body=body)
            for topic_seq, body in enumerate(bodies, start=first)
        ]
    )
    transaction.on_commit(lambda: publish(events))
    return events


def publish(events: list[Event]) -> None:
    """Publish stored events in order, in one hop to the event loop. Best effort:
    the channel layer is only the fast path, the store is the truth (I6)."""

    async def publish_each() -> None:
        for event in events:
            await apublish(envelopes(event))

    loop = serving_loop()
    try:
        if loop is None:
            async_to_sync(publish_each)()  # no loop of its own: one for the call
        elif not _ran_on(loop, publish_each):
            logger.info("Not publishing %d event(s): the event loop is stopping", len(events))
    except Exception:
        logger.warning(
            "Could not publish %d event(s) of %s to the channel layer (first id %s); "
            "subscribers will catch up from the store",
            len(events),
            events[0].stream or events[0].topic,
            events[0].id,
            exc_info=True,
        )


# How often a thread waiting for its loop to publish checks that the loop still runs.
LOOP_CHECK_SECONDS = 0.1


def _ran_on(loop: asyncio.AbstractEventLoop, function: Callable[[], Coroutine]) -> bool:
    """Run `function()` on the loop this worker thread serves and wait for it while
    that loop runs; False if the loop stopped, closed or cancelled it first (a
    server or a test shutting down while the thread finished a database call).
    Not async_to_sync: it waits forever for a call its loop will never run, and
    for one cancelled before it started, which asyncio.Runner.close does to every
    task; the process, or the test, could not end."""
    if not loop.is_running():
        return False
    call = function()
    try:
        future = asyncio.run_coroutine_threadsafe(call, loop)
    except RuntimeError:  # closed meanwhile
        call.close()
        return False
    while not future.done():
        concurrent.futures.wait([future], timeout=LOOP_CHECK_SECONDS)
        if not future.done() and not loop.is_running():
            future.cancel()
            return False
    if future.cancelled():
        return False
    future.result()  # the publish's own error, if any
    return True


def envelope(
    *,
    kind: str,
    key: str,
    text: str,
    cursor: int | None = None,
    position: int | None = None,
    final: bool = False,
) -> dict[str, Any]:
    """What the layer carries to a feed (notifications.hub): the event's text,
    encoded once for every socket of every process, its client cursor (a stream's
    `seq`, a topic's `id`; None for a live-only event), its position (`seq`,
    `topic_seq`) for gap detection, and whether it ends its stream."""
    return {
        "type": "event.message",
        "kind": kind,
        "key": key,
        "text": text,
        "cursor": cursor,
        "position": position,
        "final": final,
    }


def envelopes(event: Event) -> list[dict[str, Any]]:
    """A stored event's envelopes: to its topic and, if it has one, its stream."""
    text = json.dumps(event.as_message())
    found = [
        envelope(
            kind="topic", key=event.topic, text=text, cursor=event.id, position=event.topic_seq
        )
    ]
    if event.stream:
        found.append(
            envelope(
                kind="stream",
                key=event.stream,
                text=text,
                cursor=event.seq,
                position=event.seq,
                final=event.final,
            )
        )
    return found


async def apublish(messages: list[dict[str, Any]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    async with bounds.within(PUBLISH_TIMEOUT_SECONDS):
        for message in messages:
            await layer.group_send(feed_group(message["kind"], message["key"]), message)


async def publish_live(*, topic: str, stream: str, message: dict[str, Any]) -> None:
    """Publish a live-only event to its stream and its topic (a roadmap page shows
    progress without a socket per task): not stored, never replayed."""
    text = json.dumps(message)
    try:
        await apublish(
            [
                envelope(kind="topic", key=topic, text=text),
                envelope(kind="stream", key=stream, text=text),
            ]
        )
    except Exception:
        logger.warning("Could not publish live event to %s", stream, exc_info=True)


@transaction.atomic
def prune_events(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete old events; returns how many. A stream goes only as a whole, once its
    final event is older than the cutoff, so a stream that is still open (or a
    client resuming one) never sees a gap in `seq`. Events outside any stream go
    by age alone. Counters stay: they are the lock rows and tiny, and they keep
    the mark of what was pruned (`pruned_through`), so a client resuming below it
    is told (4410) instead of silently missing events."""
    cutoff = (now or timezone.now()) - older_than
    ended_streams = Event.objects.filter(
        final=True, stream__isnull=False, created_at__lt=cutoff
    ).values("stream")
    old = Event.objects.filter(
        Q(stream__isnull=True, created_at__lt=cutoff) | Q(stream__in=ended_streams)
    )
    # The marks, in two statements however many keys: a stream goes whole, so its
    # mark is its last seq; a topic's is the highest id pruned from it.
    EventCounter.objects.filter(key__in=ended_streams).update(pruned_through=F("last_seq"))
    highest_pruned = old.filter(topic=OuterRef("key")).values("topic").annotate(highest=Max("id"))
    EventCounter.objects.filter(key__in=old.values("topic")).update(
        pruned_through=Greatest("pruned_through", Subquery(highest_pruned.values("highest")))
    )
    deleted, _ = old.delete()
    return deleted
