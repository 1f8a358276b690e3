"""The Redis live store (notifications.live_store.RedisStore) with many attempts writing
at once, as hundreds of generations in flight in one process do."""

import asyncio
import uuid

import redis

from notifications import live_store
from tests.support.redis_server import private_redis


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


async def test_a_change_to_a_document_gone_from_the_store_fails_alone(redis_url):
    """Changes that follow on are added to what the store holds; one whose
    document is gone (expired, or Redis lost it) fails, so its writer starts over
    whole, and the changes sent with it land."""
    store = live_store.RedisStore(redis_url)
    topic = f"test-live-store-{uuid.uuid4().hex}"
    text, items = (
        live_store.Document(key=f"{topic}-{kind}", stream=topic, topic=topic, kind=kind, fields={})
        for kind in (live_store.TEXT, live_store.ITEMS)
    )
    gone = live_store.Document(
        key=f"{topic}-gone", stream=topic, topic=topic, kind=live_store.TEXT, fields={}
    )
    try:
        await store.append(text, restart=True, content="Hello", ttl=30)
        await store.append(items, restart=True, content=[{"n": 1}], ttl=30)
        await store.append(gone, restart=True, content="Lost", ttl=30)
        await store.delete(gone)
        outcomes = await asyncio.gather(
            store.append(text, restart=False, content=", world", ttl=30),
            store.append(gone, restart=False, content=" more", ttl=30),
            store.append(items, restart=False, content=[{"n": 2}, {"n": 3}], ttl=30),
            return_exceptions=True,
        )
        found = {d.key: d.content for d in await store.documents("topic", topic)}
    finally:
        await asyncio.gather(*(store.delete(d) for d in (text, items, gone)))

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], Exception)
    assert found == {text.key: "Hello, world", items.key: [{"n": 1}, {"n": 2}, {"n": 3}]}


def test_each_loop_closes_its_connections_as_it_ends(tmp_path):
    """A Celery worker runs each task on a loop of its own: a store that kept each
    loop's client would hold a Redis connection open per generation, for good."""
    document = live_store.Document(
        key="ends-with-its-loop", stream="s", topic="t", kind=live_store.TEXT, fields={}
    )
    with private_redis(tmp_path) as server:
        store = live_store.RedisStore(server.url)

        async def write_and_count() -> int:
            await store.append(document, restart=True, content="text", ttl=30)
            return connected(server)

        during = [asyncio.run(write_and_count()) for _ in range(5)]
        after = connected(server)

    assert during == [1] * 5
    assert after == 0


def connected(server) -> int:
    """Clients connected to `server`, but the one asking."""
    with redis.Redis.from_url(server.url) as client:
        return client.info("clients")["connected_clients"] - 1


async def test_a_change_that_follows_on_renews_the_expiry_of_every_key(redis_url):
    """The head, the body and both indexes expire with the work's lease; each change
    renews them all, so a document that keeps changing outlives its first lease."""
    store = live_store.RedisStore(redis_url)
    topic = f"test-live-store-{uuid.uuid4().hex}"
    document = live_store.Document(
        key=f"{topic}-doc", stream=f"{topic}-stream", topic=topic, kind=live_store.TEXT, fields={}
    )
    head, text, _items = store._keys(document.key)
    keys = [head, text, store._index("stream", document.stream), store._index("topic", topic)]
    client = redis.Redis.from_url(redis_url)
    try:
        await store.append(document, restart=True, content="Hello", ttl=5)
        assert all(0 < client.ttl(key) <= 5 for key in keys)
        await store.append(document, restart=False, content=", world", ttl=60)
        ttls = {key: client.ttl(key) for key in keys}
        [found] = await store.documents("topic", topic)
    finally:
        await store.delete(document)

    assert found.text == "Hello, world"
    assert all(ttl > 50 for ttl in ttls.values()), ttls
