"""Schemathesis against the served OpenAPI schema: every operation,
authenticated, a bounded number of generated requests each, sent to a real daphne
(DEBUG=0, as in production). The checks: no 5xx, and every response conforms to
the schema (documented status code, content type, headers and body).

Marked `fuzz`, which the pytest configuration deselects: CI runs it once, in the
embedded mode, after the two passes of the suite (`.ci/run`). Locally:
`.venv/bin/python -m pytest -m fuzz`. A failure prints Schemathesis' report, with
a curl command that reproduces each finding.

Two runs: one with the identifiers Schemathesis makes up (unknown roadmaps,
malformed ids: the 404 and 400 paths), and one with the identifiers pinned to the
demo roadmap (`seed_demo`: completed, failed and pending content, a tutorial
file, a task), so generated bodies reach the handlers and the 200/202/409 answers
are checked against their schemas too. DELETE gets a roadmap of its own there, so
the others keep theirs."""

import io
import secrets
import subprocess
import sys

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from generation.management.commands.seed_demo import DEMO_USERNAME
from generation.models import GenerationTask
from roadmaps.models import Roadmap
from roadmaps.services import create_roadmap
from tests.conftest import framework_with
from tests.support.daphne_server import daphne_server

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db(transaction=True)]

# Per operation and phase; both runs together stay well under three minutes.
MAX_EXAMPLES = 25
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
RUN_TIMEOUT_SECONDS = 300


def server_env(settings) -> dict[str, str]:
    """Production answers (DEBUG=0) over plain HTTP, the offline provider, and
    throttles far above what the run sends: a 429 is documented wherever a
    throttle applies, but a run answered 429 after its first 30 requests would
    never reach the handlers behind the throttle."""
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "INSECURE_HTTP": "1",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "GENERATION_PROVIDER": "offline",
        "OPENAI_API_KEY": "",
        "OFFLINE_PROVIDER_DELAY_SECONDS": "0.05",
        "RETRY_THROTTLE_RATE": "100000/minute",
        "AUTH_THROTTLE_RATE": "100000/minute",
        "AUTH_USERNAME_THROTTLE_RATE": "100000/minute",
    }


@pytest.fixture
def demo(db) -> dict[str, str]:
    """The demo data, and the identifiers the pinned run uses."""
    call_command("seed_demo", stdout=io.StringIO())
    user = Token.objects.get(user__username=DEMO_USERNAME).user
    roadmap = Roadmap.objects.get(owner=user)
    spare = create_roadmap(
        owner=user,
        title="To be deleted",
        goal="",
        preferences={"language": "en"},
        framework=framework_with(2),
    ).roadmap
    task = GenerationTask.objects.filter(roadmap=roadmap).latest("created_at")
    return {
        "token": user.auth_token.key,
        "roadmap_id": str(roadmap.pk),
        "spare_roadmap_id": str(spare.pk),
        "concept_id": "hooks_basics",
        "task_id": task.pk,
    }


def pinned_config(demo: dict[str, str]) -> str:
    return f"""
[parameters]
roadmap_id = "{demo["roadmap_id"]}"
concept_id = "{demo["concept_id"]}"
version = 1
task_id = "{demo["task_id"]}"

[[operations]]
include-name = "DELETE /api/v1/roadmaps/{{roadmap_id}}/"
parameters = {{ roadmap_id = "{demo["spare_roadmap_id"]}" }}
"""


@pytest.mark.parametrize("identifiers", ["generated", "pinned"])
def test_every_operation_answers_as_its_schema_says(identifiers, demo, settings, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(pinned_config(demo) if identifiers == "pinned" else "")
    with daphne_server(tmp_path, **server_env(settings)) as server:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "run",
                f"{server.http_url}/api/v1/schema/",
                "--header",
                f"Authorization: Token {demo['token']}",
                "--checks",
                CHECKS,
                "--max-examples",
                str(MAX_EXAMPLES),
                "--workers",
                "2",
                "--request-timeout",
                "20",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
        )
        server_log = server.output()
    report = run.stdout[-20000:] + run.stderr[-4000:]
    print(report)
    assert run.returncode == 0, f"{report}\n--- daphne log (tail) ---\n{server_log}"
    assert "Traceback" not in run.stdout, "a response leaked a traceback"
