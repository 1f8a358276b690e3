"""Event latency: from the commit of an event (record_event in a transaction) to
its receipt by each of N subscribers, for N = 1, 100 and 1,000, on a task stream
and on a roadmap stream, with the in-memory channel layer and with Redis when
one answers (REDIS_URL, else the local server).

Subscribers are real consumers (notifications.consumers.EventStreamConsumer)
driven through Channels' WebsocketCommunicator against the ASGI application, all
in this process and event loop, so the figures are the server's own cost: the
channel layer's fan-out plus each consumer's cursor check (task stream), or plus
one store read per subscriber per event (roadmap stream: ids may be published out
of commit order, so a topic subscriber reads the store instead of trusting the
message). Uses a throwaway database (the test database of the configured one).

Prints p50 / p95 / max per N and the p50 ratio against N = 1 measured in the same
run. Bounded: a few events per N, every wait has a timeout.
"""

import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "event_latency.json"
EVENTS_PER_RUN = 10
SPACING_SECONDS = 0.05
RECEIVE_TIMEOUT_SECONDS = 60.0
SUBSCRIBER_COUNTS = (1, 100, 1000)


def _setup_world():
    """A user, a roadmap and an open task stream, in the throwaway database."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from generation.models import GenerationTask
    from roadmaps.services import create_roadmap

    user = get_user_model().objects.create_user(username=f"bench-{uuid.uuid4().hex[:8]}")
    token = Token.objects.create(user=user).key
    framework = {
        "stages": [
            {
                "name": "S",
                "modules": [
                    {"name": "M", "concepts": [{"concept_id": "c001", "name": "Concept 1"}]}
                ],
            }
        ]
    }
    roadmap = create_roadmap(owner=user, title="Bench", framework=framework).roadmap
    task = GenerationTask.objects.create(
        id=f"batch-retry-{uuid.uuid4().hex}", kind="batch", owner=user, roadmap=roadmap, total=1
    )
    return token, roadmap, task


def _commit_event(roadmap, task, commits: dict[int, float], number: int) -> None:
    """Record one event and note the moment its transaction committed."""
    from django.db import transaction
    from django.utils import timezone

    from notifications.services import record_event
    from roadmaps.models import roadmap_topic

    with transaction.atomic():
        # Registered before record_event's publish: runs first, right after COMMIT.
        transaction.on_commit(lambda: commits.__setitem__(number, time.perf_counter()))
        record_event(
            topic=roadmap_topic(roadmap.pk),
            stream=task.pk,
            type="concept_start",
            body={
                "type": "concept_start",
                "task_id": task.pk,
                "roadmap_id": str(roadmap.pk),
                "timestamp": timezone.localtime().isoformat(),
                "message": f"bench {number}",
            },
        )


async def _measure(path: str, subscribers: int, roadmap, task) -> list[float]:
    """Latencies (seconds) of every (event, subscriber) pair."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from notifications.models import Event
    from roadmap_project.asgi import application

    after = await Event.objects.order_by("-id").values_list("id", flat=True).afirst() or 0
    seq_after = await Event.objects.filter(stream=task.pk).acount()
    cursor = after if "/roadmaps/" in path else seq_after
    communicators = [
        WebsocketCommunicator(application, f"{path}&after={cursor}") for _ in range(subscribers)
    ]
    for start in range(0, subscribers, 100):
        results = await asyncio.gather(
            *(c.connect(timeout=30) for c in communicators[start : start + 100])
        )
        assert all(accepted for accepted, _ in results), results
    receipts: list[list[float]] = [[] for _ in communicators]

    async def read(index: int, communicator) -> None:
        for _ in range(EVENTS_PER_RUN):
            output = await communicator.receive_output(timeout=RECEIVE_TIMEOUT_SECONDS)
            assert output["type"] == "websocket.send", output
            receipts[index].append(time.perf_counter())

    readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(communicators)]
    commits: dict[int, float] = {}
    for number in range(EVENTS_PER_RUN):
        await sync_to_async(_commit_event)(roadmap, task, commits, number)
        await asyncio.sleep(SPACING_SECONDS)
    outcomes = await asyncio.gather(*readers, return_exceptions=True)
    lost = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    for communicator in communicators:
        with contextlib.suppress(BaseException):
            await communicator.disconnect(timeout=5)
    if lost:
        print(f"  {len(lost)} of {subscribers} subscriber(s) failed: {lost[0]!r}", flush=True)
    return [
        received[number] - commits[number]
        for received in receipts
        for number in range(len(received))
    ]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _run_layer(label: str, token: str, roadmap, task, results: dict) -> None:
    from django.conf import settings

    streams = {
        "task stream": f"/api/v1/ws/{task.pk}?token={token}",
        "roadmap stream": f"/api/v1/ws/roadmaps/{roadmap.pk}?token={token}",
    }
    for stream_label, path in streams.items():
        baseline = None
        for subscribers in SUBSCRIBER_COUNTS:
            latencies = await _measure(path, subscribers, roadmap, task)
            if not latencies:
                print(f"{label:9} {stream_label:14} N={subscribers:<5} no event received")
                continue
            p50 = statistics.median(latencies)
            baseline = baseline or p50
            results[f"{label} / {stream_label} / N={subscribers}"] = {
                "p50_ms": round(p50 * 1000, 1),
                "p95_ms": round(_percentile(latencies, 0.95) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1),
                "p50_ratio_to_n1": round(p50 / baseline, 1),
            }
            print(
                f"{label:9} {stream_label:14} N={subscribers:<5} "
                f"p50={p50 * 1000:8.1f} ms  p95={_percentile(latencies, 0.95) * 1000:8.1f} ms  "
                f"max={max(latencies) * 1000:8.1f} ms  p50 ratio vs N=1: {p50 / baseline:6.1f}"
                f"  (catch-up every {settings.NOTIFICATIONS_CATCH_UP_SECONDS:g} s)",
                flush=True,
            )


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def main() -> None:
    from asgiref.sync import async_to_sync
    from django.test.utils import override_settings, setup_databases, teardown_databases

    databases = setup_databases(verbosity=0, interactive=False)
    try:
        token, roadmap, task = _setup_world()
        layers = {
            "in-memory": {
                "default": {
                    "BACKEND": "roadmap_project.patches.channels.InMemoryChannelLayer",
                    "CONFIG": {"capacity": 1000, "expiry": 60},
                }
            },
        }
        redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        if _redis_answers(redis_url):
            layers["redis"] = {
                "default": {
                    "BACKEND": "channels_redis.core.RedisChannelLayer",
                    "CONFIG": {"hosts": [redis_url], "capacity": 1000},
                }
            }
        results: dict = {}
        for label, layer in layers.items():
            with override_settings(CHANNEL_LAYERS=layer):
                async_to_sync(_run_layer)(label, token, roadmap, task, results)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        teardown_databases(databases, verbosity=0)
    if "redis" not in layers:
        raise SystemExit(f"the Redis part did not run: no Redis answers at {redis_url}")


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")
    import django

    django.setup()
    main()
