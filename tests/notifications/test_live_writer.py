"""The live writer (notifications.live.Writer) when its store answers late or
fails: what it publishes must add up, offset by offset, to what the work stored."""

import asyncio

from notifications import live, live_store


class RecordingStore(live_store.MemoryStore):
    """A memory store that records each write (restart, content) as it starts;
    `before_write` is where a subclass makes it late or fail."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bool, str]] = []

    async def append(self, document, *, restart, content, ttl) -> None:
        self.sent.append((restart, content))
        await self.before_write()
        await super().append(document, restart=restart, content=content, ttl=ttl)

    async def before_write(self) -> None:
        pass

    async def first_write(self) -> None:
        async with asyncio.timeout(5):
            while not self.sent:
                await asyncio.sleep(0.001)


class LateStore(RecordingStore):
    """Its writes wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def before_write(self) -> None:
        await self.gate.wait()


class FailingOnceStore(RecordingStore):
    """Its first write fails, as Redis does when it is down."""

    async def before_write(self) -> None:
        if len(self.sent) == 1:
            raise ConnectionError("the store is down")


def text_writer(store: RecordingStore, monkeypatch) -> tuple[live.Writer, list[dict]]:
    """A writer over `store`, and the `live` part of each change it publishes."""
    published: list[dict] = []

    async def publish(envelopes: list[dict]) -> None:
        published.append(envelopes[0]["live"])

    monkeypatch.setattr(live, "store", lambda: store)
    monkeypatch.setattr(live, "apublish", publish)
    writer = live.Writer(
        key="attempt", stream="task", topic="roadmap", kind=live_store.TEXT, fields={}, ttl=30
    )
    return writer, published


async def test_a_settle_while_a_change_is_on_its_way_sends_the_rest_once(monkeypatch):
    late = LateStore()
    writer, published = text_writer(late, monkeypatch)
    writer.add_text("Hello, ")
    await late.first_write()  # the first change has left the buffer for the store

    settling = asyncio.create_task(writer.settle("Hello, world"))
    await asyncio.sleep(0.05)
    late.gate.set()
    await settling

    assert late.sent == [(True, "Hello, "), (False, "world")]
    assert [(p["offset"], p["size"]) for p in published] == [(0, 7), (7, 5)]
    assert (await late.read("attempt")).text == "Hello, world"


async def test_a_settle_after_a_failed_write_says_all_of_it_at_once(monkeypatch):
    """After a failed write the writer waits STORE_RETRY_SECONDS before it tries
    again; a settle does not: the stored content goes out now, whole, as a
    snapshot of a new generation (the failed write may have landed)."""
    failing = FailingOnceStore()
    writer, published = text_writer(failing, monkeypatch)
    writer.add_text("Hello")
    await failing.first_write()

    started = asyncio.get_running_loop().time()
    await writer.settle("Hello, world")

    assert asyncio.get_running_loop().time() - started < live.STORE_RETRY_SECONDS / 2
    assert failing.sent == [(True, "Hello"), (True, "Hello, world")]
    assert [(p["generation"], p["offset"], p["size"]) for p in published] == [(1, 0, 12)]
    assert (await failing.read("attempt")).text == "Hello, world"
