"""Celery 5 keeps the queues a worker consumes (`-Q` narrows them) on
`app.amqp.queues.consume_from`, which its worker fills at start-up and which no
public API returns. The lease renewal of the Celery engine asks the broker how many
messages wait in exactly those queues (generation.liveness). Nothing is replaced:
this module only reads the attribute, so there is nothing to apply."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery


def consumed_queues(app: "Celery") -> list[str]:
    """The queues this worker consumes, else the default queue."""
    names = list(app.amqp.queues.consume_from)
    return names or [app.conf.task_default_queue]
