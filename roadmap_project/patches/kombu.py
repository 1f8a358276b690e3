"""Messages a Celery worker took from Redis but had not started when its broker
connection was lost. Celery forgets them on the loss (its `Consumer.on_close`: "a
delivery tag is specific to the current channel", true of AMQP, which redelivers);
kombu's Redis transport keeps each in the `unacked` hash and pushes it back to its
queue when the channel closes, which needs the broker that just went away. So
they wait there for the visibility timeout (1 h), and the item each would have run
fails after its lease (celery/celery#1307, closed unimplemented). The worker hands
them back itself once it has reconnected (roadmap_project.celery). This relies on
the Redis transport's `QoS` as it is in the pinned kombu: the two keys it keeps
unacknowledged messages under and `restore_by_tag`, the method its own visibility
timeout restores with, called with the commands kombu itself reads those keys
with (`ZRANGE … BYSCORE`, `HGET`: its client adds a configured key prefix to
those); why: docs/decisions/0015-orphaned-messages.md."""

import json
from collections.abc import Collection


def return_orphaned_messages(
    channel, *, routing_keys: Collection[str], delivered_before: float, keep: Collection[str]
) -> int:
    """Put back in their queues the unacknowledged messages of `routing_keys`
    delivered before a time, except the delivery tags in `keep` (the tasks this
    worker still runs). A message another worker is running comes back too: units
    of work are interchangeable (docs/decisions/0006-fair-scheduling.md), so it runs
    the fairest queued item or nothing. Returns how many were put back."""
    qos, client = channel.qos, channel.client
    delivered = client.zrange(
        qos.unacked_index_key, delivered_before, "-inf", desc=True, byscore=True
    )
    returned = 0
    for tag in (tag.decode() for tag in delivered):
        payload = None if tag in keep else client.hget(qos.unacked_key, tag)
        if payload is None:  # kept, or acknowledged meanwhile
            continue
        try:
            _message, _exchange, routing_key = json.loads(payload)
        except (ValueError, TypeError):
            continue  # not kombu's [message, exchange, routing key]: not ours to move
        if routing_key in routing_keys:
            qos.restore_by_tag(tag, client=client)
            returned += 1
    return returned
