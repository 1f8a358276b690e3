"""The Celery application of the distributed engine (DESIGN §2, docs/deployment.md).

`celery -A roadmap_project worker` finds `app` here. The Django `@task` functions
become Celery tasks through django-tasks-celery (settings.TASKS with
TASK_BACKEND=celery); the worker imports `generation.tasks` by autodiscovery, and
importing it registers `generation.tasks.generate_content`.
"""

import logging
import os
import time

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_ready, worker_shutdown
from django.conf import settings

from roadmap_project.collector import settle_after_start_up

# Before the first read of a setting (settings are lazy).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")

app = Celery("roadmap_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
# A generation waits on the provider for 30-60 s and uses almost no CPU: threads,
# one task per thread, as many threads as provider calls this process may make
# (docs/decisions/0002-celery-thread-pool.md). Command-line flags still override.
app.conf.update(worker_pool="threads", worker_concurrency=settings.GENERATION_CONCURRENCY)
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


class ReturnOrphanedMessages(bootsteps.StartStopStep):
    """After the broker connection comes back, hand back the messages this worker
    took but had not started when it was lost (roadmap_project.patches.kombu):
    without this, a Redis restart made one queued item per worker fail after its
    lease instead of running. Anything but a connection error is logged, never
    raised: Celery ends a worker on any other error of a consumer step."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self.connected = False
        self.lost_at: float | None = None

    def start(self, parent) -> None:
        self.connected = True
        if self.lost_at is None:
            return
        from celery.worker.state import active_requests

        from roadmap_project.patches.kombu import return_orphaned_messages

        try:
            returned = return_orphaned_messages(
                parent.connection.default_channel,
                routing_keys={queue.routing_key for queue in parent.task_consumer.queues},
                delivered_before=self.lost_at,
                keep={request.message.delivery_tag for request in tuple(active_requests)},
            )
        except parent.connection_errors:
            raise  # lost again: Celery reconnects, and this runs once more
        except Exception:
            logger.exception("Could not return the messages taken before the broker was lost")
            returned = 0
        self.lost_at = None
        if returned:
            logger.warning("Returned %d message(s) taken before the broker was lost", returned)

    def stop(self, parent) -> None:
        """Celery calls it when the connection is lost, before it reconnects (and
        at shutdown, and after each failed attempt to connect: only the first
        stop after a connection counts)."""
        if self.connected:
            self.connected = False
            self.lost_at = time.time()


app.steps["consumer"].add(ReturnOrphanedMessages)


@worker_init.connect
def load_the_provider_or_refuse_to_start(**kwargs) -> None:
    """A worker with a wrong provider list would fail every pair it takes. Celery's
    Django fixup runs the system checks but ignores their errors, and only logs an
    exception raised here: exit with generation.E001's problems instead, before
    the worker takes a message (as daphne does, roadmap_project.asgi). A right one
    is loaded now, not under the first task."""
    from django.core.exceptions import ImproperlyConfigured

    from generation.providers import load_provider
    from generation.providers.config import refuse_to_start_if_misconfigured

    try:
        refuse_to_start_if_misconfigured()
        load_provider()
    except ImproperlyConfigured as error:
        raise SystemExit(f"The worker does not start: {error}") from error


# The sweeper of this worker process; generation.liveness needs Django's app
# registry, which is ready only once the worker runs, hence the import inside the
# handler.
_sweepers: list = []


@worker_ready.connect
def start_generation_sweeper(**kwargs) -> None:
    """Recover stale generations now, then every sweep interval (DESIGN §7)."""
    from generation.liveness import Sweeper

    sweeper = Sweeper(app)
    _sweepers.append(sweeper)
    sweeper.start()


@worker_ready.connect
def settle_the_heap(**kwargs) -> None:
    """The worker streams answers too: the same collector settings as daphne's."""
    settle_after_start_up()


@worker_shutdown.connect
def stop_generation_sweeper(**kwargs) -> None:
    while _sweepers:
        _sweepers.pop().stop()
