"""The Celery application of the distributed engine (DESIGN §2, docs/deployment.md).

`celery -A roadmap_project worker` finds `app` here. The Django `@task` functions
become Celery tasks through django-tasks-celery (settings.TASKS with
TASK_BACKEND=celery); the worker imports `generation.tasks` by autodiscovery, and
importing it registers `generation.tasks.generate_content`.
"""

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

# Before the first read of a setting (settings are lazy).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")

app = Celery("roadmap_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
# A generation waits on the provider for 30-60 s and uses almost no CPU: threads,
# one task per thread, as many threads as provider calls this process may make
# (docs/decisions/0002-celery-thread-pool.md). Command-line flags still override.
app.conf.update(worker_pool="threads", worker_concurrency=settings.GENERATION_CONCURRENCY)
app.autodiscover_tasks()

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


@worker_shutdown.connect
def stop_generation_sweeper(**kwargs) -> None:
    while _sweepers:
        _sweepers.pop().stop()
