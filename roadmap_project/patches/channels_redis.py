"""channels_redis 4.3.0's pub/sub layer (the distributed mode), with each
process's publishes sent in batches.

Upstream's `RedisSingleShardConnection.publish` takes the shard's lock for each
PUBLISH and holds it until Redis answers, so a process publishes one message per
round trip, one after another. On a busy event loop a round trip lasts at least
a loop iteration: with hundreds of generations in flight (a progress event a
second and a live change every 100 ms each), publishes queued behind the lock
for longer than the publish timeout, live text stopped and stored events were
left to the store catch-up. Here a shard keeps an outbox
(roadmap_project.outbox): a publish queues its message and waits for it to be
sent, and everything queued goes out as one pipeline (one round trip) under the
same lock. Messages go out in the order they were queued, as with the lock.

Relied on: `RedisPubSubChannelLayer._get_layer` (the per-loop layer it creates
on first use), `RedisPubSubLoopLayer._shards`, and `RedisSingleShardConnection`'s
`host`, `_lock`, `_ensure_redis` and `_redis`. No setting or hook batches
publishes."""

from typing import Any

from channels_redis import pubsub

from roadmap_project.outbox import Outbox


class BatchingShardConnection(pubsub.RedisSingleShardConnection):
    def __init__(self, host: Any, channel_layer: Any) -> None:
        super().__init__(host, channel_layer)
        self._outbox: Outbox[tuple[str, bytes]] = Outbox(self._publish_batch)

    async def publish(self, channel: str, message: bytes) -> None:
        await self._outbox.send((channel, message))

    async def _publish_batch(self, batch: list[tuple[str, bytes]]) -> list[None]:
        async with self._lock:
            self._ensure_redis()
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel, message in batch:
                    pipe.publish(channel, message)
                await pipe.execute()
        return [None] * len(batch)


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """The layer to name in CHANNEL_LAYERS: upstream's, with batching shards."""

    def _get_layer(self) -> pubsub.RedisPubSubLoopLayer:
        layer = super()._get_layer()
        if not all(isinstance(shard, BatchingShardConnection) for shard in layer._shards):
            # The loop's layer is new: none of its shards has been used yet.
            layer._shards = [BatchingShardConnection(shard.host, layer) for shard in layer._shards]
        return layer
