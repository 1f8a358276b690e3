"""Who may subscribe to which event stream: the hook notifications asks."""

from django.core.exceptions import ValidationError

from generation.events import roadmap_topic
from generation.models import GenerationTask
from roadmaps.selectors import visible_roadmaps


def authorize_stream(*, user, kind: str, key: str) -> str | None:
    """The store key to subscribe to, or None when the stream is unknown or not
    the user's (both answer 4404, so existence is never revealed)."""
    if kind == "topic":
        try:
            exists = visible_roadmaps(user=user).filter(pk=key).exists()
        except ValidationError:  # not a UUID
            return None
        return roadmap_topic(key) if exists else None
    tasks = GenerationTask.objects.filter(pk=key)
    if not user.is_staff:
        tasks = tasks.filter(roadmap__owner=user)
    return key if tasks.exists() else None
