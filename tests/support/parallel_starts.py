"""Starts of generation from separate OS processes, released together: each
process (multiprocessing's `spawn`: a fresh interpreter, its own Django and its
own database connection) sets up, then for each round waits at a barrier shared
with every other process and the test, and makes one start with the service
every entry point calls. The test works between rounds, while all of them wait.

Nothing Django is imported at the top: a spawned process imports this module
before it has set Django up."""

import multiprocessing
import os
import queue
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What one start did: `started` with its task, `refused` with the reading
    that refused it (BudgetExceeded's used, reserved and starting), or `error`."""

    username: str
    roadmap_id: uuid.UUID | None
    result: str
    task_id: str = ""
    used: int = 0
    reserved: int = 0
    starting: int = 0
    detail: str = ""


@contextmanager
def parallel_starts(
    database_url: str, plans: list[tuple[str, list[uuid.UUID]]], *, timeout: float = 60
) -> Iterator[Callable[[], list[Outcome]]]:
    """One process per (username, roadmap ids) in `plans`, which in round k
    generates its k-th roadmap for that user. Yields `release`: it lets every
    process make its next start at once and returns their outcomes."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(len(plans) + 1, timeout=timeout)
    outcomes = spawn.Queue()
    workers = [
        spawn.Process(
            target=start_when_released,
            args=(database_url, username, roadmap_ids, barrier, outcomes),
            daemon=True,
        )
        for username, roadmap_ids in plans
    ]
    for worker in workers:
        worker.start()

    def release() -> list[Outcome]:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return drained()  # a process could not set up: its outcome says why
        return [outcomes.get(timeout=timeout) for _ in workers]

    def drained() -> list[Outcome]:
        left = []
        try:
            while True:
                left.append(outcomes.get(timeout=5))
        except queue.Empty:
            return left

    try:
        yield release
    finally:
        barrier.abort()  # processes still waiting for a round end
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()


def start_when_released(
    database_url: str, username: str, roadmap_ids: list[uuid.UUID], barrier, outcomes
) -> None:
    """The body of one process. Its work is stored, never run (a dummy task
    backend): what is checked is the start itself."""
    try:
        os.environ["DATABASE_URL"] = database_url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")
        import django
        from django.conf import settings

        # Before setup: the apps make the task backends as they load.
        settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}
        django.setup()
        from django.contrib.auth import get_user_model
        from django.db import connections

        from generation import services
        from generation.errors import BudgetExceeded
        from roadmaps.models import Roadmap

        user = get_user_model().objects.get(username=username)
        roadmaps = Roadmap.objects.in_bulk(roadmap_ids)
    except Exception:
        outcomes.put(Outcome(username, None, "error", detail=traceback.format_exc()))
        barrier.abort()
        return
    try:
        for roadmap_id in roadmap_ids:
            barrier.wait()
            try:
                result = services.generate_roadmap(roadmap=roadmaps[roadmap_id], user=user)
                outcome = Outcome(username, roadmap_id, "started", task_id=result.task.pk)
            except BudgetExceeded as refusal:
                outcome = Outcome(
                    username, roadmap_id, "refused",
                    used=refusal.used, reserved=refusal.reserved, starting=refusal.starting,
                )  # fmt: skip
            except Exception:
                outcome = Outcome(username, roadmap_id, "error", detail=traceback.format_exc())
            outcomes.put(outcome)
    except threading.BrokenBarrierError:
        pass  # the test ended or another process failed
    finally:
        connections.close_all()
