"""Reading events for replay and catch-up."""

from dataclasses import dataclass

from django.db.models import Max, QuerySet

from notifications.models import Event, EventCounter


def stream_events(*, stream: str, after: int = 0) -> QuerySet[Event]:
    """A stream's events above `after`, in seq order."""
    return Event.objects.filter(stream=stream, seq__gt=after).order_by("seq")


def topic_events(*, topic: str, after: int = 0) -> QuerySet[Event]:
    """A topic's events above the global id `after`, in id order."""
    return Event.objects.filter(topic=topic, id__gt=after).order_by("id")


def newest_topic_cursor(*, topic: str) -> int:
    """The global id of a topic's newest stored event (0: none yet): where a client
    that reads the current state after this starts its subscription, so it
    neither misses an event nor replays the topic's whole history."""
    return Event.objects.filter(topic=topic).aggregate(newest=Max("id"))["newest"] or 0


def events_after(*, kind: str, key: str, after: int, limit: int = 500) -> list[Event]:
    """The next page of a subscription: a stream by `seq`, a topic by `id`."""
    events = (
        stream_events(stream=key, after=after)
        if kind == "stream"
        else topic_events(topic=key, after=after)
    )
    return list(events[:limit])


@dataclass(frozen=True)
class Marks:
    """What a stream's or topic's counter row keeps beside the count."""

    ended: bool  # the final event was recorded (nothing can follow), even if pruned since
    pruned_through: int  # the highest cursor whose event was pruned (0: none)
    last_seq: int | None  # the newest position (a stream's seq, a topic's topic_seq)


def marks(*, key: str) -> Marks:
    """The counter row, in one read (a new subscription's checks)."""
    row = (
        EventCounter.objects.filter(key=key)
        .values_list("closed", "pruned_through", "last_seq")
        .first()
    )
    return Marks(*row) if row else Marks(ended=False, pruned_through=0, last_seq=0)


def newest_cursors(*, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The newest cursor of each (kind, key): a stream's last `seq` (its counter),
    a topic's highest event `id`. Two queries, however many keys."""
    streams = [key for kind, key in keys if kind == "stream"]
    topics = [key for kind, key in keys if kind == "topic"]
    newest: dict[tuple[str, str], int] = {}
    if streams:
        counters = EventCounter.objects.filter(key__in=streams).values_list("key", "last_seq")
        newest |= {("stream", key): seq for key, seq in counters}
    if topics:
        highest = (
            Event.objects.filter(topic__in=topics)
            .values("topic")
            .annotate(newest=Max("id"))
            .values_list("topic", "newest")
            .order_by()
        )
        newest |= {("topic", topic): event_id for topic, event_id in highest}
    return newest
