"""The hook through which notifications asks who may read a stream: it knows
nothing of what a stream is about (generation registers the answer)."""

from typing import Protocol

from roadmap_project.hooks import Hook


class StreamAuthorizer(Protocol):
    def __call__(self, *, user, kind: str, key: str) -> str | None:
        """The store key of the stream (`kind` "stream") or topic (`kind` "topic")
        that `key` names, if `user` may read it; None for unknown or not theirs
        (both close 4404, so existence is never revealed)."""


authorize_stream: Hook[StreamAuthorizer] = Hook("notifications.authorize_stream")
