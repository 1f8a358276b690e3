"""Who may subscribe to which event stream: the hook notifications asks
(notifications.hooks.authorize_stream, registered in generation.apps)."""

import uuid

from generation.models import GenerationTask
from roadmaps.models import roadmap_topic
from roadmaps.selectors import visible_roadmaps


def authorize_stream(*, user, kind: str, key: str) -> str | None:
    """The store key to subscribe to, or None when the stream is unknown or not
    the user's (both answer 4404, so existence is never revealed). A roadmap is
    named by its canonical UUID, however the client spelled it (upper case, no
    dashes): the events are stored under that name."""
    if kind == "topic":
        try:
            roadmap_id = uuid.UUID(key)
        except ValueError:  # not a UUID
            return None
        exists = visible_roadmaps(user=user).filter(pk=roadmap_id).exists()
        return roadmap_topic(roadmap_id) if exists else None
    tasks = GenerationTask.objects.filter(pk=key)
    if not user.is_staff:
        tasks = tasks.filter(roadmap__owner=user)
    return key if tasks.exists() else None
