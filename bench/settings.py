"""The product's settings plus what only benchmarks need: a trivial view served
by the same server, the floor a real endpoint is compared with."""

import os

from roadmap_project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

# BENCH_TASKS=dummy: starts are recorded but never run, so a load test measures the
# request path alone (the work runs elsewhere in production: Celery workers).
if os.environ.get("BENCH_TASKS") == "dummy":
    TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}
