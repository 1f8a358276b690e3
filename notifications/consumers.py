from channels.generic.websocket import AsyncJsonWebsocketConsumer


class EventStreamConsumer(AsyncJsonWebsocketConsumer):
    """Placeholder; the realtime work replaces it."""

    kind = "stream"
