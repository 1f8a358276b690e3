"""The fault matrix (DESIGN I3, I5, I7, §6): every provider fault, on every
task engine, ends the pair in the right terminal state with a contiguous event
stream, and no public text carries what the provider or the process knows.

Each cell retries one concept's content through the REST API, against the fake
OpenAI server (real HTTP, the real SDK) scripted with one fault: once (the
retries overcome it: `completed`) or every time (`failed`, with the error class's
`retryable` flag and public message). The fake's error bodies carry the API key, a
file path, the provider's hostname, a traceback and a marker of the raw body, so
a leak into any public surface shows.

The in-process engine runs every cell in every pass. The Celery cells need a real
worker and Redis: marked `distributed`, they run in the distributed CI pass, where
a missing service fails them (tests/conftest.py), and the embedded pass deselects
them."""

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from generation import engine
from generation.errors import (
    GenerationError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    UnusableOutput,
)
from generation.models import GenerationTask
from generation.providers import reset_provider
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support import processes
from tests.support.celery_workers import Stack, running_stack
from tests.support.fake_openai import (
    VALID_TUTORIAL,
    Behaviour,
    FakeOpenAI,
    cut,
    error,
    hang,
    malformed,
    ok,
    reset,
)

pytestmark = pytest.mark.django_db(transaction=True)

# Secret-looking on purpose: a leak of the key must be recognisable.
API_KEY = "sk-proj-FaultMatrix7c41e09b2d5a86f3e1c0b9a8d7f6e5d4c3b2a1"
LEAKED_PATH = "/home/deploy/roadmap/roadmap_project/settings.py"
PROVIDER_HOST = "api.llm-provider.example"
RAW_BODY_MARKER = "RAW-PROVIDER-BODY-5e1f"
LEAKY_TEXT = (
    f"{RAW_BODY_MARKER}: upstream https://{PROVIDER_HOST}/v1/chat/completions failed "
    f"for key {API_KEY}. Traceback (most recent call last):\n"
    f'  File "{LEAKED_PATH}", line 214, in <module>\n'
    "    OPENAI_API_KEY = os.environ['OPENAI_API_KEY']\nKeyError: 'OPENAI_API_KEY'"
)
LEAKY_BODY = {"error": {"message": LEAKY_TEXT, "type": "server_error", "code": None}}

# Small bounds, so a persistent fault fails in about a second: a stall of 0.3 s is
# a timeout; 1 SDK retry x 2 backoff rounds x 2 output attempts.
MATRIX_SETTINGS = {
    "OPENAI_API_KEY": API_KEY,
    "OPENAI_MODEL": "gpt-test",
    "OPENAI_TIMEOUT_SECONDS": 1.0,
    "GENERATION_STALL_SECONDS": 0.3,
    "OPENAI_MAX_RETRIES": 1,
    "GENERATION_TRANSIENT_ATTEMPTS": 2,
    "GENERATION_BACKOFF_SECONDS": 0.01,
    "GENERATION_OUTPUT_ATTEMPTS": 2,
}
# More than any cell can consume: (1 + OPENAI_MAX_RETRIES) x rounds x output attempts.
ALWAYS = 10
CELL_TIMEOUT_SECONDS = 15.0
TERMINAL_EVENTS = {"concept_complete", "concept_failed"}


@dataclass(frozen=True)
class Fault:
    """A provider fault: `answers` are scripted in order (then the fake answers
    validly); `fails_with` is the expected error class, None for `completed`."""

    answers: tuple[Behaviour, ...]
    fails_with: type[GenerationError] | None = None
    content_type: str = "tutorial"


def once(behaviour: Behaviour, content_type: str = "tutorial") -> Fault:
    return Fault(answers=(behaviour,), content_type=content_type)


def always(
    behaviour: Behaviour, fails_with: type[GenerationError], content_type: str = "tutorial"
) -> Fault:
    return Fault(answers=(behaviour,) * ALWAYS, fails_with=fails_with, content_type=content_type)


FAULTS = {
    "429-once": once(error(429, LEAKY_BODY)),
    "429-always": always(error(429, LEAKY_BODY), ProviderRateLimited),
    "500-once": once(error(500, LEAKY_BODY)),
    "500-always": always(error(500, LEAKY_BODY), ProviderUnavailable),
    "401": always(error(401, LEAKY_BODY), ProviderRejected),
    "timeout-once": once(hang(5)),
    "timeout-always": always(hang(5), ProviderTimeout),
    "connection-reset-once": once(reset()),
    "connection-reset-always": always(reset(), ProviderUnavailable),
    "malformed-body-once": once(malformed(LEAKY_TEXT)),
    "malformed-body-always": always(malformed(LEAKY_TEXT), UnusableOutput),
    "invalid-json-quiz-always": always(
        ok('{"questions": [' + json.dumps(LEAKY_TEXT)), UnusableOutput, "quiz"
    ),
    "stream-cut-once": once(cut(after_chunks=3)),
    "stream-cut-always": always(cut(after_chunks=3), ProviderUnavailable),
    "stream-reset-midway-always": always(cut(after_chunks=3, reset=True), ProviderUnavailable),
}


@dataclass
class Deployment:
    """An engine behind the REST API: a client for the API, a way to wait until
    the engine has finished a task, and the fake provider the engine asks."""

    client: httpx.AsyncClient
    wait_finished: Callable[[str], Awaitable[None]]
    provider: FakeOpenAI


@pytest.fixture
def matrix_provider(fake_openai, settings):
    """The fake server with the matrix's bounds and secret-looking key."""
    for name, value in MATRIX_SETTINGS.items():
        setattr(settings, name, value)
    reset_provider()
    return fake_openai


def finished(task_id: str) -> bool:
    return GenerationTask.objects.get(pk=task_id).status != "running"


@pytest.fixture(
    params=[
        "inprocess",
        pytest.param(
            "celery", marks=[pytest.mark.distributed, pytest.mark.celery, pytest.mark.redis]
        ),
    ]
)
async def deployment(request, transactional_db, api):
    async with AsyncExitStack() as cleanup:
        # ORM calls of an async test run in asgiref's sync thread: close its
        # connection, or PostgreSQL refuses to drop the test database.
        cleanup.push_async_callback(sync_to_async(connections.close_all))
        if request.param == "inprocess":
            yield in_process(api, request.getfixturevalue("matrix_provider"))
        else:
            yield await cleanup.enter_async_context(
                celery_worker(*request.getfixturevalue("celery_stack"))
            )


def in_process(api: httpx.AsyncClient, provider: FakeOpenAI) -> Deployment:
    """The embedded engine: the ASGI app in this test's loop runs the work there."""

    async def wait_in_process(task_id: str) -> None:
        # In another thread: the engine's work runs on this test's loop.
        idle = await sync_to_async(engine.wait_until_idle, thread_sensitive=False)(
            timeout=CELL_TIMEOUT_SECONDS
        )
        assert idle, f"task {task_id} still running after {CELL_TIMEOUT_SECONDS} s"

    return Deployment(client=api, wait_finished=wait_in_process, provider=provider)


@pytest.fixture(scope="module")
def celery_stack(django_db_setup, tmp_path_factory) -> Iterator[tuple[FakeOpenAI, Stack]]:
    """One fake provider, daphne server and Celery worker for every Celery cell
    (the openai provider pointed at the fake, the matrix's bounds; the server
    enqueues to the worker), started once: a stack's start and stop took 4.6 s a
    cell, twice its work. The cells share nothing else: the database is emptied
    between them, by DELETE, which the idle processes' connections do not block
    (tests/conftest.py), and the fake forgets its script and records."""
    fake = FakeOpenAI().start()
    scratch = tmp_path_factory.mktemp("fault-matrix-celery")
    try:
        with running_stack(
            database_url=processes.test_database_url(),
            redis_url=celery_redis_url(),
            log_dir=scratch / "logs",
            media_root=scratch / "media",
            servers=1,
            workers=1,
            GENERATION_PROVIDER="openai",
            OPENAI_BASE_URL=fake.base_url,
            **MATRIX_SETTINGS,
        ) as stack:
            yield fake, stack
    finally:
        fake.stop()


@asynccontextmanager
async def celery_worker(provider: FakeOpenAI, stack: Stack) -> AsyncIterator[Deployment]:
    provider.forget()
    async with httpx.AsyncClient(base_url=stack.servers[0].url, timeout=10) as client:

        async def wait_in_worker(task_id: str) -> None:
            deadline = time.monotonic() + CELL_TIMEOUT_SECONDS
            while not await sync_to_async(finished)(task_id):
                assert time.monotonic() < deadline, f"task {task_id} still running"
                await asyncio.sleep(0.1)

        yield Deployment(client=client, wait_finished=wait_in_worker, provider=provider)


def celery_redis_url() -> str:
    """The distributed pass's Redis: the `distributed` mark required that it answers."""
    return os.environ["REDIS_URL"]


# --- Assertions --------------------------------------------------------------

FORBIDDEN = {
    "the API key": API_KEY,
    "the API key's prefix": "sk-proj-",
    "a file path": LEAKED_PATH,
    "a file path's root": "/home/",
    "a source file": ".py",
    "the provider's hostname": PROVIDER_HOST,
    "the provider's endpoint": "chat/completions",
    "the fake server's address": "127.0.0.1",
    "a traceback": "Traceback",
    "a traceback frame": 'File "',
    "the provider's raw body": RAW_BODY_MARKER,
    "an exception name": "Error:",
}


def assert_no_leak(surface: str, text: str, *, also: tuple[str, ...] = ()) -> None:
    for what, fragment in [*FORBIDDEN.items(), *(("the fake's port", f) for f in also)]:
        assert fragment not in text, f"{surface} leaks {what}: {text[:500]}"


def stored_events(task_id: str) -> list[Event]:
    return list(Event.objects.filter(stream=task_id).order_by("seq"))


def content_row(roadmap, content_type: str) -> ConceptContent:
    return ConceptContent.objects.get(roadmap=roadmap, content_type=content_type)


def task_row(task_id: str) -> GenerationTask:
    return GenerationTask.objects.get(pk=task_id)


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
async def test_provider_fault_ends_in_the_right_terminal_state_without_leaks(
    deployment, alice, make_roadmap, fault
):
    provider = deployment.provider
    provider.script(*fault.answers)
    roadmap = await sync_to_async(make_roadmap)(alice)
    content_type = fault.content_type
    base = f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/{content_type}"

    started = await deployment.client.post(f"{base}/retry", headers=auth(alice))
    assert started.status_code == 202, started.text
    task_id = started.json()["data"]["task_id"]
    await deployment.wait_finished(task_id)

    # Terminal state: completed after a fault the retries overcome, else failed.
    content = await sync_to_async(content_row)(roadmap, content_type)
    task = await sync_to_async(task_row)(task_id)
    expected = "failed" if fault.fails_with else "completed"
    assert content.status == expected, content.public_error
    assert (task.status, task.completed, task.failed) == (
        expected,
        int(expected == "completed"),
        int(expected == "failed"),
    )
    assert content.version == (1 if expected == "completed" else 0)

    # The stream: seq 1..n without a gap, one terminal event, last, matching the DB.
    events = await sync_to_async(stored_events)(task_id)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    terminal = "concept_failed" if fault.fails_with else "concept_complete"
    assert [event.type for event in events] == ["concept_start", terminal]
    assert events[-1].final and [event.final for event in events].count(True) == 1

    # The task endpoint (the polling fallback) says the same as the store.
    polled = await deployment.client.get(f"/api/v1/tasks/{task_id}", headers=auth(alice))
    assert polled.status_code == 200
    body = polled.json()
    assert body["status"] == expected
    assert [e["seq"] for e in body["events"]] == [event.seq for event in events]
    assert [e["id"] for e in body["events"]] == [event.id for event in events]
    assert [item["status"] for item in body["items"]] == [expected]

    read = await deployment.client.get(base, headers=auth(alice))
    detail = await deployment.client.get(f"/api/v1/roadmaps/{roadmap.pk}", headers=auth(alice))
    assert detail.status_code == 200

    # Nothing public carries what the provider or the process knows (I7).
    port = f":{httpx.URL(provider.base_url).port}"
    surfaces = {
        "public_error": content.public_error,
        "the stored events": json.dumps([event.body for event in events], ensure_ascii=False),
        "the task endpoint": polled.text,
        "the content endpoint": read.text,
        "the roadmap detail": detail.text,
    }
    for surface, text in surfaces.items():
        assert_no_leak(surface, text, also=(port,))

    if fault.fails_with is None:
        assert read.status_code == 200, read.text
        assert content.public_error == ""
        if content_type == "tutorial":  # the whole answer, never a fragment of one
            assert read.json()["markdown"].strip() == VALID_TUTORIAL.strip()
    else:
        # The error class's fixed public message and retryable flag, nothing else.
        public = str(fault.fails_with.public_message)
        failed = events[-1].body
        assert failed["error"] == public
        assert failed["retryable"] is fault.fails_with.retryable
        assert content.public_error == public
        assert read.status_code == 404
        assert read.json()["status"] == "failed"
        if not fault.fails_with.retryable:
            assert len(provider.requests) == 1  # permanent: never repeated
