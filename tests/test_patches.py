"""Each patch of another library (roadmap_project/patches/) relies on upstream code
as it is in the pinned version; these fail when that code changes, so the patch is
looked at again (and dropped once upstream does the job)."""

import inspect

from daphne.ws_protocol import WebSocketProtocol

import roadmap_project.asgi  # noqa: F401  (applies the patches)
from roadmap_project.patches import daphne as daphne_patch


def test_daphne_still_drops_the_close_reason_and_the_patch_is_applied():
    upstream = inspect.getsource(daphne_patch.upstream_handle_reply)

    assert 'self.serverClose(code=message.get("code", None))' in upstream
    assert "reason" not in upstream  # when daphne passes it on, drop the patch
    assert WebSocketProtocol.handle_reply is daphne_patch.handle_reply


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
