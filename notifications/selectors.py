"""Reading events for replay and catch-up."""

from django.db.models import QuerySet

from notifications.models import Event, EventCounter


def stream_events(*, stream: str, after: int = 0) -> QuerySet[Event]:
    """A stream's events above `after`, in seq order."""
    return Event.objects.filter(stream=stream, seq__gt=after).order_by("seq")


def topic_events(*, topic: str, after: int = 0) -> QuerySet[Event]:
    """A topic's events above the global id `after`, in id order."""
    return Event.objects.filter(topic=topic, id__gt=after).order_by("id")


def events_after(*, kind: str, key: str, after: int, limit: int = 500) -> list[Event]:
    """The next page of a subscription: a stream by `seq`, a topic by `id`."""
    events = (
        stream_events(stream=key, after=after)
        if kind == "stream"
        else topic_events(topic=key, after=after)
    )
    return list(events[:limit])


def stream_has_ended(*, stream: str) -> bool:
    """Whether the stream's final event was recorded (nothing can follow it), even
    if its events have since been pruned."""
    return EventCounter.objects.filter(key=stream, closed=True).exists()
