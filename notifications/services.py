"""Writing events: stored in the caller's transaction, published after commit (I5)."""

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.db.models import F, Max, OuterRef, Q, Subquery
from django.db.models.functions import Greatest
from django.utils import timezone

from notifications.models import Event, EventCounter

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 2.0


def topic_group(topic: str) -> str:
    return f"topic.{topic}"


def stream_group(stream: str) -> str:
    return f"stream.{stream}"


def _next_seq(key: str) -> int:
    """Take the counter row's lock and the next number; must run in a transaction.
    One statement that both SQLite and PostgreSQL speak, where the ORM needs an
    UPDATE, a SELECT and, on a stream's first event, an INSERT: the row is created
    by the upsert, so two first events of one key never race into an
    IntegrityError, and starting a task needs no counter row of its own."""
    quote = connection.ops.quote_name
    table = quote(EventCounter._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({quote('key')}, {quote('last_seq')}, {quote('closed')}) "
            f"VALUES (%s, 1, %s) ON CONFLICT ({quote('key')}) "
            f"DO UPDATE SET {quote('last_seq')} = {table}.{quote('last_seq')} + 1 "
            f"RETURNING {quote('last_seq')}",
            [key, False],
        )
        return cursor.fetchone()[0]


def record_event(
    *, topic: str, type: str, body: dict[str, Any], stream: str | None = None, final: bool = False
) -> Event:
    """Store an event in the current transaction and publish it once that commits.

    Lock order is topic, then stream, in every caller, so writers never deadlock."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("record_event must run inside the transaction of its state change")
    _next_seq(topic)
    seq = _next_seq(stream) if stream else None
    event = Event.objects.create(
        topic=topic, stream=stream, seq=seq, type=type, body=body, final=final
    )
    if final and stream:
        EventCounter.objects.filter(key=stream).update(closed=True)
    message = event.as_message()
    transaction.on_commit(lambda: publish(topic=topic, stream=stream, message=message, final=final))
    return event


def record_topic_events(*, topic: str, type: str, bodies: list[dict[str, Any]]) -> list[Event]:
    """Store events of one topic, outside any stream, in the current transaction:
    one lock of the topic's counter and one bulk insert (ids in list order), then
    publish them in that order once the transaction commits."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("record_topic_events must run inside the transaction of its change")
    if not bodies:
        return []
    _next_seq(topic)
    events = Event.objects.bulk_create(
        [Event(topic=topic, type=type, body=body) for body in bodies]
    )
    messages = [event.as_message() for event in events]
    transaction.on_commit(lambda: publish_many(topic=topic, messages=messages))
    return events


def publish(
    *, topic: str, stream: str | None, message: dict[str, Any], final: bool = False
) -> None:
    """Best effort: the channel layer is only the fast path, the store is the truth (I6)."""
    publish_many(topic=topic, stream=stream, messages=[message], final=final)


def publish_many(
    *,
    topic: str,
    stream: str | None = None,
    messages: list[dict[str, Any]],
    final: bool = False,
) -> None:
    """Publish events in order, in one hop to the event loop; best effort, as above.
    `final` marks the last message of a stream."""

    async def publish_each() -> None:
        for index, message in enumerate(messages, start=1):
            last = final and index == len(messages)
            await apublish(topic=topic, stream=stream, message=message, final=last)

    try:
        async_to_sync(publish_each)()
    except Exception:
        logger.warning(
            "Could not publish %d event(s) of %s to the channel layer (first id %s); "
            "subscribers will catch up from the store",
            len(messages),
            stream or topic,
            messages[0].get("id"),
            exc_info=True,
        )


async def apublish(
    *, topic: str | None, stream: str | None, message: dict[str, Any], final: bool = False
) -> None:
    """Send to the groups. `final` travels in the envelope, beside the client-visible
    event, so a stream subscriber knows to close after it without asking the store."""
    layer = get_channel_layer()
    if layer is None:
        return
    payload = {"type": "event.message", "event": message, "final": final}
    groups = ([topic_group(topic)] if topic else []) + ([stream_group(stream)] if stream else [])
    async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
        for group in groups:
            await layer.group_send(group, payload)


async def publish_live(*, topic: str, stream: str, message: dict[str, Any]) -> None:
    """Publish a live-only event to its stream and its topic (a roadmap page shows
    progress without a socket per task): not stored, never replayed."""
    try:
        await apublish(topic=topic, stream=stream, message=message)
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
