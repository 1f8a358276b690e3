"""The Redis live store (notifications.live.RedisStore) with many attempts writing
at once, as hundreds of generations in flight in one process do."""

import asyncio
import uuid

from notifications import live


async def test_more_writes_at_once_than_store_connections_all_land(redis_url):
    store = live.RedisStore(redis_url)
    topic = f"test-live-store-{uuid.uuid4().hex}"
    documents = [
        live.Document(
            key=f"{topic}-{n}", stream=f"{topic}-{n}", topic=topic, kind=live.TEXT, fields={}
        )
        for n in range(3 * live.STORE_CONNECTIONS)
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
