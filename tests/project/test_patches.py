"""Each patch of another library (roadmap_project/patches/) relies on upstream code
as it is in the pinned version; these fail when that code changes, so the patch is
looked at again (and dropped once upstream does the job)."""

import ast
import asyncio
import inspect
import textwrap
import threading
import time
import uuid

import pytest
import redis.asyncio
from asgiref.sync import SyncToAsync, ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from channels import layers
from channels.layers import get_channel_layer
from channels_redis import pubsub
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper
from django.db.utils import load_backend
from django.tasks import task_backends
from django.tasks.backends.dummy import DummyBackend
from django.test import override_settings

import roadmap_project.asgi  # applies the patches
import roadmap_project.settings
from roadmap_project.patches import asgiref as asgiref_patch
from roadmap_project.patches import channels as channels_patch
from roadmap_project.patches import channels_redis as channels_redis_patch
from roadmap_project.patches import daphne as daphne_patch
from roadmap_project.patches import django as django_patch


def test_daphne_still_drops_the_close_reason_and_the_patch_is_applied():
    upstream = inspect.getsource(daphne_patch.upstream_handle_reply)

    assert 'self.serverClose(code=message.get("code", None))' in upstream
    assert "reason" not in upstream  # when daphne passes it on, drop the patch
    assert WebSocketProtocol.handle_reply is daphne_patch.handle_reply


def statements(function) -> list[str]:
    """A function's statements, docstring and comments left out, as normalised source."""
    definition = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    body = definition.body
    if ast.get_docstring(definition) is not None:
        body = body[1:]
    return [ast.unparse(statement) for statement in body]


def test_channels_walks_every_channel_on_each_receive_and_group_send():
    upstream = layers.InMemoryChannelLayer
    clean = inspect.getsource(upstream._clean_expired)

    assert statements(upstream.receive)[1] == "self._clean_expired()"
    assert statements(upstream.group_send)[2] == "self._clean_expired()"
    assert list(inspect.signature(upstream._clean_expired).parameters) == ["self"]
    # Expiry in seconds of wall time, so a walk a second late expires nothing early.
    assert "while not queue.empty() and queue._queue[0][0] < time.time():" in clean
    assert "timeout = int(time.time()) - self.group_expiry" in clean


def test_the_in_memory_layer_walks_at_most_once_a_second(monkeypatch):
    walks = []
    monkeypatch.setattr(layers.InMemoryChannelLayer, "_clean_expired", lambda self: walks.append(1))
    layer = channels_patch.InMemoryChannelLayer()

    layer._clean_expired()
    layer._clean_expired()
    assert len(walks) == 1

    layer._last_clean -= channels_patch.CLEAN_INTERVAL_SECONDS
    layer._clean_expired()
    assert len(walks) == 2


def test_channels_sends_to_each_group_member_through_a_task_of_its_own():
    group_send = inspect.getsource(layers.InMemoryChannelLayer.group_send)
    send = inspect.getsource(layers.InMemoryChannelLayer.send)

    assert "ops.append(asyncio.create_task(self.send(channel, message)))" in group_send
    assert "for send_result in asyncio.as_completed(ops):" in group_send
    assert "await" not in send.split('"""')[-1]  # a send never waits


async def test_the_in_memory_group_send_reaches_every_member_without_suspending():
    layer = channels_patch.InMemoryChannelLayer()
    members = [await layer.new_channel() for _ in range(3)]
    for member in members:
        await layer.group_add("group", member)

    sending = layer.group_send("group", {"type": "t"})
    with pytest.raises(StopIteration):
        sending.send(None)  # done at its first step: no loop iteration needed

    assert [(await layer.receive(member))["type"] for member in members] == ["t", "t", "t"]


def test_channels_builds_a_queue_on_every_send():
    send = statements(layers.InMemoryChannelLayer.send)

    assert any("self.channels.setdefault(channel, asyncio.Queue(" in line for line in send)


async def test_the_in_memory_send_builds_a_queue_only_for_a_channel_without_one(monkeypatch):
    built = []

    class CountedQueue(asyncio.Queue):
        def __init__(self, *args, **kwargs) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(asyncio, "Queue", CountedQueue)
    layer = channels_patch.InMemoryChannelLayer()
    channel = await layer.new_channel()
    for n in range(3):
        await layer.send(channel, {"type": "t", "n": n})

    assert len(built) == 1
    assert [(await layer.receive(channel))["n"] for _ in range(3)] == [0, 1, 2]


def test_the_in_memory_layer_is_the_embedded_modes():
    if not settings.REDIS_URL:
        assert isinstance(get_channel_layer(), channels_patch.InMemoryChannelLayer)


def test_channels_redis_publishes_one_message_per_round_trip_under_the_shard_lock():
    upstream = pubsub.RedisSingleShardConnection

    assert statements(upstream.publish) == [
        "async with self._lock:\n"
        "    self._ensure_redis()\n"
        "    await self._redis.publish(channel, message)"
    ]
    assert list(inspect.signature(upstream.__init__).parameters) == [
        "self",
        "host",
        "channel_layer",
    ]
    assert "RedisSingleShardConnection(host, self) for host in decode_hosts(hosts)" in (
        inspect.getsource(pubsub.RedisPubSubLoopLayer.__init__)
    )
    # Every operation of the layer goes through _get_layer, which keeps one per loop.
    assert "layer = obj._get_layer()" in inspect.getsource(pubsub._async_proxy)
    assert "self._layers[loop] = layer" in inspect.getsource(
        pubsub.RedisPubSubChannelLayer._get_layer
    )


async def test_the_redis_layer_sends_concurrent_publishes_in_batches_in_order(
    redis_url, monkeypatch
):
    rounds = []
    execute = redis.asyncio.client.Pipeline.execute

    async def counted(self, *args, **kwargs):
        rounds.append(len(self.command_stack))
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", counted)
    layer = channels_redis_patch.RedisPubSubChannelLayer(hosts=[redis_url])
    group = f"test-batches-{uuid.uuid4().hex}"
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        await asyncio.gather(*(layer.group_send(group, {"type": "t", "n": n}) for n in range(300)))
        received = [(await layer.receive(channel))["n"] for _ in range(300)]
    finally:
        await layer.flush()

    assert received == list(range(300))
    assert sum(rounds) == 300 and len(rounds) < 300


async def test_a_publish_the_redis_layer_cannot_send_fails():
    layer = channels_redis_patch.RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:1/0"])
    with pytest.raises(redis.exceptions.ConnectionError):
        await asyncio.wait_for(layer.group_send("test-unreachable", {"type": "t"}), 10)


def test_the_redis_layer_is_the_distributed_modes():
    if settings.REDIS_URL:
        assert isinstance(get_channel_layer(), channels_redis_patch.RedisPubSubChannelLayer)
    named = "roadmap_project.patches.channels_redis.RedisPubSubChannelLayer"
    assert named in inspect.getsource(roadmap_project.settings)


def test_django_begins_commits_rolls_back_and_closes_through_the_private_hooks():
    set_autocommit = inspect.getsource(BaseDatabaseWrapper.set_autocommit)
    assert 'hasattr(self, "_start_transaction_under_autocommit")' in set_autocommit
    assert "self._start_transaction_under_autocommit()" in set_autocommit
    assert "self._commit()" in inspect.getsource(BaseDatabaseWrapper.commit)
    assert "self._rollback()" in inspect.getsource(BaseDatabaseWrapper.rollback)
    assert "self._close()" in inspect.getsource(BaseDatabaseWrapper.close)
    begin = inspect.getsource(SQLiteDatabaseWrapper._start_transaction_under_autocommit)
    assert 'self.cursor().execute("BEGIN")' in begin
    for hook in ("_commit", "_rollback", "_close"):
        assert list(inspect.signature(getattr(BaseDatabaseWrapper, hook)).parameters) == ["self"]


def test_the_sqlite_engine_is_the_patched_backend():
    loaded = load_backend("roadmap_project.db.sqlite3")

    assert loaded.DatabaseWrapper is django_patch.DatabaseWrapper
    if settings.DATABASES["default"]["ENGINE"] == "roadmap_project.db.sqlite3":
        assert isinstance(connections["default"], django_patch.DatabaseWrapper)


def test_django_asgi_handler_only_loads_async_middleware_and_calls_get_response_async():
    assert statements(ASGIHandler.__init__) == [
        "super().__init__()",
        "self.load_middleware(is_async=True)",
    ]
    assert statements(ASGIHandler.__call__)[-1] == (
        "async with ThreadSensitiveContext():\n    await self.handle(scope, receive, send)"
    )
    assert "self.run_get_response(request)" in inspect.getsource(ASGIHandler.handle)
    assert statements(ASGIHandler.run_get_response)[0] == (
        "response = await self.get_response_async(request)"
    )


def test_the_asgi_app_runs_the_middleware_in_sync_mode():
    handler = roadmap_project.asgi.django_asgi_app
    if settings.REQUEST_THREADS:
        assert isinstance(handler, django_patch.SyncMiddlewareASGIHandler)
        assert not iscoroutinefunction(handler._middleware_chain)
        assert iscoroutinefunction(ASGIHandler()._middleware_chain)


def test_asgiref_records_the_loop_a_worker_thread_serves():
    assert isinstance(SyncToAsync.threadlocal, threading.local)
    handler = inspect.getsource(SyncToAsync.thread_handler)
    assert "self.threadlocal.main_event_loop = loop" in handler
    # The pinned reason for asgiref 3.13: the lanes pass their executor.
    assert "executor" in inspect.signature(ThreadSensitiveContext).parameters


async def test_serving_loop_is_the_loop_a_sync_to_async_thread_serves():
    loop = asyncio.get_running_loop()

    assert await sync_to_async(asgiref_patch.serving_loop, thread_sensitive=False)() is loop
    found = []
    thread = threading.Thread(target=lambda: found.append(asgiref_patch.serving_loop()))
    thread.start()
    thread.join()
    assert found == [None]


def test_changing_tasks_settings_gives_fresh_backends():
    """Not a patch: tests/conftest.py's use_task_backend relies on django.tasks
    forgetting its backends when TASKS changes (`setting_changed`), and again when
    the change is undone."""
    configured = type(task_backends["default"])
    assert configured is not DummyBackend

    dummy = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}
    with override_settings(TASKS=dummy):
        assert type(task_backends["default"]) is DummyBackend
    assert type(task_backends["default"]) is configured


def test_celery_still_keeps_the_queues_a_worker_consumes_on_amqp_queues():
    """generation.liveness counts the broker's backlog in the queues a worker
    consumes; Celery keeps them, selected by `-Q` at start-up, on
    `app.amqp.queues.consume_from` only."""
    from celery import Celery
    from celery.worker.worker import WorkController

    from roadmap_project.patches.celery import consumed_queues

    assert "self.app.amqp.queues.select(include)" in inspect.getsource(WorkController.setup_queues)
    app = Celery("probe", set_as_current=False)
    app.conf.task_default_queue = "probe-default"
    assert consumed_queues(app) == ["probe-default"]  # nothing selected or declared yet
    app.amqp.queues.select(["probe-a", "probe-b"])  # what `-Q probe-a,probe-b` does
    assert consumed_queues(app) == ["probe-a", "probe-b"]


def test_a_worker_can_hand_back_the_messages_kombu_keeps_unacknowledged_for_it(redis_url):
    """Celery still drops the requests a worker reserved when its connection is lost
    (and leaves their return to the broker), and kombu's Redis transport still keeps
    a taken message in its `unacked` keys; return_orphaned_messages puts back the
    messages of the given queues taken before a time, except those kept."""
    from celery.worker.consumer.consumer import Consumer
    from kombu import Connection

    from roadmap_project.patches.kombu import return_orphaned_messages

    assert "reserved_requests.clear()" in inspect.getsource(Consumer.on_close)
    mine, other = f"probe-{uuid.uuid4().hex[:8]}", f"probe-{uuid.uuid4().hex[:8]}"
    with Connection(redis_url) as taker, Connection(redis_url) as returner:
        queues = {name: taker.SimpleQueue(name) for name in (mine, other)}
        for name, count in ((mine, 3), (other, 1)):
            for n in range(count):
                queues[name].put({"n": n})
        take = taker.default_channel.basic_get  # as a worker's consumer takes one
        orphan, running, elsewhere = take(mine), take(mine), take(other)
        channel = returner.default_channel
        taken = channel.client.hkeys(channel.qos.unacked_key)
        # Someone else's entry of another shape is left alone, not a failure.
        stranger = f"probe-{uuid.uuid4().hex[:8]}"
        channel.client.hset(channel.qos.unacked_key, stranger, "not kombu's")
        channel.client.zadd(channel.qos.unacked_index_key, {stranger: time.time()})
        assert {orphan.delivery_tag, running.delivery_tag} <= {t.decode() for t in taken}

        returned = return_orphaned_messages(
            channel,
            routing_keys={mine},
            delivered_before=time.time(),
            keep={running.delivery_tag},
        )

        assert returned == 1
        unacked = {t.decode() for t in channel.client.hkeys(channel.qos.unacked_key)}
        assert orphan.delivery_tag not in unacked
        assert {running.delivery_tag, elsewhere.delivery_tag} <= unacked
        waiting = [take(mine), take(mine)]
        assert sorted(message.decode()["n"] for message in waiting) == [0, 2]
        for message in (running, elsewhere, *waiting):
            message.ack()
        channel.client.hdel(channel.qos.unacked_key, stranger)
        channel.client.zrem(channel.qos.unacked_index_key, stranger)
        for queue in queues.values():
            queue.clear()
            queue.close()


def test_postgresql_still_flushes_with_truncate_and_the_tests_flush_with_delete():
    """tests/conftest.py's flush_by_delete: upstream's one TRUNCATE of every table
    is what costs ~90 ms a transactional test on PostgreSQL."""
    from django.core.management.color import no_style
    from django.db.backends.postgresql.operations import DatabaseOperations

    from tests.conftest import TRUNCATE_FLUSH, delete_flush

    assert [*inspect.signature(TRUNCATE_FLUSH).parameters] == [
        "self", "style", "tables", "reset_sequences", "allow_cascade"
    ]  # fmt: skip
    assert 'style.SQL_KEYWORD("TRUNCATE")' in inspect.getsource(TRUNCATE_FLUSH)
    assert DatabaseOperations.sql_flush is delete_flush
    operations = DatabaseOperations(connection=None)
    assert operations.sql_flush(no_style(), ["a", "b"]) == ['DELETE FROM "a";', 'DELETE FROM "b";']
    assert operations.sql_flush(no_style(), ["a"], reset_sequences=True) == [
        'TRUNCATE "a" RESTART IDENTITY;'
    ]
