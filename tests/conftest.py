"""Shared fixtures: real HTTP against the ASGI app, users with tokens, roadmaps."""

import functools
import os
from pathlib import Path

import httpx
import pytest
from django.db.backends.postgresql.operations import DatabaseOperations as PostgreSQLOperations

from generation.providers import reset_provider

pytest_plugins = ["tests.support.fake_openai", "tests.support.flush"]

DEMO_FRAMEWORK = {
    "stages": [
        {
            "name": "Foundations",
            "modules": [
                {
                    "name": "Hooks",
                    "concepts": [
                        {
                            "concept_id": "concept_001",
                            "name": "React Hooks 基础",
                            "description": "useState, useEffect",
                        },
                    ],
                }
            ],
        }
    ]
}


def framework_with(n: int) -> dict:
    concepts = [{"concept_id": f"c{i:03d}", "name": f"Concept {i}"} for i in range(1, n + 1)]
    return {"stages": [{"name": "Stage", "modules": [{"name": "Module", "concepts": concepts}]}]}


LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_url() -> str:
    """Redis for the tests that need one, in every CI pass: REDIS_URL, else the
    local server."""
    url = os.environ.get("REDIS_URL") or LOCAL_REDIS_URL
    require_service("Redis", redis_reachable(url), f"no Redis answers at {url}")
    return url


def require_service(name: str, available: bool, why: str) -> None:
    """Skip only on a bare developer machine; in CI a missing service is a failure."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI: {why}")
    pytest.skip(f"{name} is not configured: {why}")


def distributed_services() -> None:
    """PostgreSQL and Redis, for a test of the distributed pass (marked `distributed`)."""
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    require_service(
        "PostgreSQL",
        engine.endswith("postgresql"),
        f"DATABASE_URL names {engine.rsplit('.', 1)[-1]}, not a PostgreSQL database",
    )
    url = os.environ.get("REDIS_URL")
    require_service(
        "Redis",
        bool(url) and redis_reachable(url),
        f"no Redis answers at {url}" if url else "REDIS_URL is not set",
    )


SYSTEM_TESTS = Path(__file__).resolve().parent / "system"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items) -> None:
    """Marks every test under tests/system/ `system` (they start real processes),
    before `-m` selects, so no file there can forget the marker."""
    for item in items:
        if item.path.is_relative_to(SYSTEM_TESTS):
            item.add_marker(pytest.mark.system)


def pytest_runtest_setup(item) -> None:
    """A test of the distributed pass checks its services before its fixtures."""
    if item.get_closest_marker("distributed"):
        distributed_services()


OUTCOMES = ("passed", "failed", "error", "skipped")


def pytest_terminal_summary(terminalreporter) -> None:
    """What became of the distributed pass's tests, so a CI log shows they ran."""
    stats = terminalreporter.stats
    marked = [
        (outcome, report.nodeid)
        for outcome in OUTCOMES
        for report in stats.get(outcome, [])
        if "distributed" in getattr(report, "keywords", {})
    ]
    counts = {outcome: len({n for o, n in marked if o == outcome}) for outcome in OUTCOMES}
    deselected = [i for i in stats.get("deselected", []) if i.get_closest_marker("distributed")]
    if any(counts.values()):
        terminalreporter.write_line(
            "distributed-pass tests: {passed} passed, {failed} failed, {error} errors, "
            "{skipped} skipped".format(**counts)
        )
    if deselected:
        terminalreporter.write_line(
            f"distributed-pass tests: {len(deselected)} deselected (they run in the "
            "distributed pass)"
        )


@pytest.fixture(scope="session", autouse=True)
def close_stray_connections(django_db_setup, django_db_blocker):
    """Background threads (the engine's loop, sync_to_async workers) keep their own
    connections; end them so the test database can be dropped."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


TRUNCATE_FLUSH = PostgreSQLOperations.sql_flush


def delete_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False) -> list[str]:
    """PostgreSQL's flush with DELETE instead of TRUNCATE (fixture flush_by_delete);
    a flush that resets sequences or cascades keeps upstream's TRUNCATE."""
    if reset_sequences or allow_cascade:
        return TRUNCATE_FLUSH(
            self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
    return [f"DELETE FROM {self.quote_name(table)};" for table in tables]


@pytest.fixture(scope="session", autouse=True)
def flush_by_delete():
    """Between transactional tests Django empties every table with one TRUNCATE,
    which on PostgreSQL swaps each table's files: ~90 ms a test, most of a minute
    of the distributed pass. The tests' tables hold a few rows, which DELETE
    removes in about a millisecond; Django's foreign keys are deferred to the
    flush's commit, so the order of the tables does not matter. A test-only patch
    of a public backend method (decision 0011, tests/project/test_patches.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PostgreSQLOperations, "sql_flush", delete_flush)
        yield


@pytest.fixture(autouse=True)
def stop_private_engine():
    """Outside a server the engine runs work, and its periodic stale sweep, on a
    private loop in a daemon thread (generation.engine). Stop it at the end of the
    test that started it: left running, its sweep fails the rows of later tests
    (every half lease of whatever lease they set) and leftover work writes into
    their database. The next enqueue starts a fresh loop (engine.stop_private_loop)."""
    yield
    from generation import engine

    try:
        engine.stop_private_loop(timeout=40)
    except TimeoutError:
        pytest.fail("the engine's private loop did not wind down within 40 s")


@pytest.fixture(autouse=True)
def generation_settings(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.GENERATION_PROVIDER = "offline"
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.01  # a test that needs a pace sets its own
    settings.RETRY_THROTTLE_RATE = "10000/minute"
    settings.AUTH_THROTTLE_RATE = "10000/minute"
    settings.AUTH_USERNAME_THROTTLE_RATE = "10000/minute"
    reset_provider()
    yield settings
    reset_provider()


@pytest.fixture
def use_task_backend(settings):
    """Switch the django.tasks backend for one test. Changing TASKS through the
    `settings` fixture sends `setting_changed`, on which django.tasks forgets its
    backends (and again when the fixture restores TASKS)."""
    from django.tasks import task_backends

    def use(path: str) -> None:
        settings.TASKS = {"default": {"BACKEND": path}}
        # Made here, in the test's context: a request runs in a copy of it
        # (roadmap_project.handlers), which shares this instance but does not hand
        # back one it made itself, so the test could not read what was enqueued.
        task_backends["default"]

    return use


@pytest.fixture
def no_runner(use_task_backend):
    """Enqueued work is stored but never run: a message the broker lost."""
    use_task_backend("django.tasks.backends.dummy.DummyBackend")


@pytest.fixture(autouse=True)
def quick_password_hasher(request, settings) -> None:
    """In-process tests hash passwords with few iterations (tests/support/hashers.py).
    System tests keep Django's hasher: their servers check those passwords with it,
    and would rehash a quick one at its first login."""
    if not request.node.get_closest_marker("system"):
        settings.PASSWORD_HASHERS = ["tests.support.hashers.QuickPBKDF2PasswordHasher"]


def password_hash(password: str) -> str:
    """A test password's hash under the test's hasher, computed once per run for
    each: Django's takes about half a second here, and nearly every test creates
    alice."""
    from django.conf import settings

    return hash_with(password, settings.PASSWORD_HASHERS[0])


@functools.cache
def hash_with(password: str, hasher: str) -> str:
    """`hasher` is the cache key: make_password uses the first of PASSWORD_HASHERS."""
    from django.contrib.auth.hashers import make_password

    return make_password(password)


@pytest.fixture
def make_user(django_user_model):
    from rest_framework.authtoken.models import Token

    from roadmap_project.throttling import throttle_cache

    def make(username: str, *, is_staff: bool = False):
        user = django_user_model.objects.create(
            username=username, password=password_hash(f"{username}-password"), is_staff=is_staff
        )
        user.token = Token.objects.create(user=user).key
        # The throttle's history is keyed by pk and outlives the test (the
        # process's cache, Redis across runs), and pks repeat: a rolled-back test
        # hands its ids back, a new test database starts at 1.
        throttle_cache().delete(f"throttle_generation_{user.pk}")
        return user

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def make_roadmap():
    from roadmaps.services import create_roadmap

    def make(owner, *, concepts: int = 1, framework: dict | None = None, **fields):
        return create_roadmap(
            owner=owner,
            title=fields.get("title", "Learn React"),
            goal=fields.get("goal", "Ship production apps"),
            preferences=fields.get("preferences", {"language": "en"}),
            framework=framework or framework_with(concepts),
        ).roadmap

    return make


@pytest.fixture
async def api():
    """An HTTP client speaking to the real ASGI application in this event loop."""
    from roadmap_project.asgi import application

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def auth(user) -> dict:
    return {"Authorization": f"Token {user.token}"}


def pytest_unconfigure(config) -> None:
    """Django drops the SQLite test database file but not its WAL sidecars."""
    from django.conf import settings

    if settings.configured and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        name = settings.DATABASES["default"]["TEST"]["NAME"]
        for suffix in ("-wal", "-shm"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)
