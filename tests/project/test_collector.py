"""The garbage collector's settings in the processes that stream answers
(roadmap_project/collector.py): set once the process is ready, not left to the
defaults that paused a loop of 500 streams for ~100 ms."""

import json
import subprocess
import sys

from celery.signals import worker_ready

from roadmap_project import celery as celery_app
from roadmap_project.collector import THRESHOLDS
from tests.support.processes import ROOT, process_env

PROBE = """
import gc, json
import roadmap_project.asgi
print(json.dumps({"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_daphne_s_application_freezes_start_up_and_collects_less_often():
    # A fresh interpreter: importing the ASGI module is what daphne does.
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=process_env(),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    state = json.loads(probe.stdout.strip().splitlines()[-1])
    assert tuple(state["thresholds"]) == THRESHOLDS
    # Django, the apps and their modules: tens of thousands of objects.
    assert state["frozen"] > 10_000


def test_celery_workers_settle_their_heap_once_ready():
    receivers = [receiver() for _, receiver in worker_ready.receivers]
    assert celery_app.settle_the_heap in receivers
