"""A channel layer that goes away and comes back: a Redis the test can cut, and
waits for the hub to notice."""

import asyncio
import json
import time
from urllib.parse import urlsplit

from channels.layers import get_channel_layer

from notifications import hub as hubs
from notifications.services import envelope, feed_group


async def store_checks(hub: hubs.Hub, count: int, *, within: float = 10.0) -> None:
    """Wait until the hub has made `count` more periodic store checks; each one
    first retries the layer joins that failed."""
    target = hub.rounds + count
    deadline = time.monotonic() + within
    while hub.rounds < target:
        assert time.monotonic() < deadline, f"{count} store checks not made within {within} s"
        await asyncio.sleep(0.02)


async def live_again(sockets: list, topic: str, *, within: float = 15.0) -> None:
    """Send live-only probes through the topic's layer group until they reach the
    sockets: the layer delivers live again. Probes are never stored, so no store
    check can carry them; each socket reads up to the last probe sent."""
    layer, group = get_channel_layer(), feed_group("topic", topic)
    deadline = time.monotonic() + within
    sent = 0
    while True:
        assert time.monotonic() < deadline, f"live delivery did not resume within {within} s"
        sent += 1
        probe = envelope(kind="topic", key=topic, text=json.dumps({"type": "probe", "n": sent}))
        try:
            async with asyncio.timeout(2):
                await layer.group_send(group, probe)
        except Exception:
            await asyncio.sleep(0.1)  # the layer still refuses: try again
            continue
        # receive_nothing, not a receive with a timeout: that would end the socket.
        if not await sockets[0].receive_nothing(timeout=0.3):
            break
    # One probe arrived, so the group is subscribed again and every later probe
    # follows it in order: read each socket up to the last one.
    for socket in sockets:
        while True:
            message = json.loads(await socket.receive_from(timeout=5))
            assert message["type"] == "probe", message
            if message["n"] == sent:
                break


class RedisSwitch:
    """A TCP hop in front of the real Redis that the test can cut and restore:
    Redis going away and coming back, without touching the shared server."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname, parts.port or 6379)
        self.database = parts.path or "/0"
        self.up = False
        self.writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> "RedisSwitch":
        self.server = await asyncio.start_server(self.relay, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}{self.database}"
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.server.close()
        for writer in list(self.writers):
            writer.close()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )
