"""Reading events for replay and catch-up."""

from django.db.models import QuerySet

from notifications.models import Event


def stream_events(*, stream: str, after: int = 0) -> QuerySet[Event]:
    """A stream's events above `after`, in seq order."""
    return Event.objects.filter(stream=stream, seq__gt=after).order_by("seq")


def topic_events(*, topic: str, after: int = 0) -> QuerySet[Event]:
    """A topic's events above the global id `after`, in id order."""
    return Event.objects.filter(topic=topic, id__gt=after).order_by("id")
