"""The Redis live store (notifications.live_store.RedisStore) with many attempts writing
at once, as hundreds of generations in flight in one process do."""

import asyncio
import uuid

from notifications import live_store


async def test_more_writes_at_once_than_store_connections_all_land(redis_url):
    store = live_store.RedisStore(redis_url)
    topic = f"test-live-store-{uuid.uuid4().hex}"
    documents = [
        live_store.Document(
            key=f"{topic}-{n}", stream=f"{topic}-{n}", topic=topic, kind=live_store.TEXT, fields={}
        )
        for n in range(3 * live_store.STORE_CONNECTIONS)
    ]
    try:
        await asyncio.gather(
            *(
                store.append(d, restart=True, content=f"text {n}", ttl=30)
                for n, d in enumerate(documents)
            )
        )
        found = {d.key: d.text for d in await store.documents("topic", topic)}
    finally:
        await asyncio.gather(*(store.delete(d) for d in documents))

    assert found == {d.key: f"text {n}" for n, d in enumerate(documents)}
