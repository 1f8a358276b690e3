from django.urls import re_path

from notifications.consumers import EventStreamConsumer

websocket_urlpatterns = [
    re_path(
        r"^api/v1/ws/roadmaps/(?P<topic_id>[0-9a-fA-F-]{1,64})/?$",
        EventStreamConsumer.as_asgi(kind="topic"),
    ),
    re_path(
        r"^api/v1/ws/(?P<stream_id>[A-Za-z0-9_-]{1,100})/?$",
        EventStreamConsumer.as_asgi(kind="stream"),
    ),
    # Any other path (an id no stream could have, a very long one, another path):
    # accepted, then closed like an unknown stream (4401, else 4404), rather than a
    # router error that answers the handshake HTTP 500 and logs a traceback each time.
    re_path(r"", EventStreamConsumer.as_asgi(kind="stream")),
]
