"""`manage.py seed_demo` (DESIGN §7): demo accounts, a sample roadmap with
completed, failed and pending content, and idempotence."""

import asyncio
import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from rest_framework.authtoken.models import Token

from generation.models import GenerationTask
from notifications.models import Event
from roadmaps.models import Concept, ConceptContent, Roadmap
from tests.conftest import auth

pytestmark = pytest.mark.django_db(transaction=True)

EXPECTED_STATUSES = {
    ("hooks_basics", "tutorial"): "completed",
    ("hooks_basics", "resources"): "completed",
    ("hooks_basics", "quiz"): "completed",
    ("jsx_components", "tutorial"): "completed",
    ("state_management", "tutorial"): "failed",
    ("state_management", "quiz"): "failed",
    ("memoization", "resources"): "failed",
}


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


async def seed_in_a_thread() -> str:
    """Like a terminal would: not in asgiref's shared sync thread, which the
    engine's own database calls need while the command waits for them."""

    def run() -> str:
        try:
            return seed()
        finally:
            connection.close()

    return await asyncio.to_thread(run)


def statuses() -> dict[tuple[str, str], str]:
    return {
        (concept_id, content_type): status
        for concept_id, content_type, status in ConceptContent.objects.values_list(
            "concept__concept_id", "content_type", "status"
        )
    }


def snapshot() -> dict:
    return {
        "users": sorted(get_user_model().objects.values_list("username", flat=True)),
        "tokens": sorted(Token.objects.values_list("key", flat=True)),
        "roadmaps": Roadmap.objects.count(),
        "concepts": Concept.objects.count(),
        "tasks": GenerationTask.objects.count(),
        "events": Event.objects.count(),
        "statuses": statuses(),
    }


def test_seed_demo_creates_accounts_and_a_mixed_status_roadmap(settings):
    settings.DEBUG = True  # as in `make run`
    output = seed()

    users = get_user_model().objects
    demo, admin = users.get(username="demo"), users.get(username="admin")
    assert demo.check_password("demo") and not demo.is_staff
    assert admin.check_password("admin") and admin.is_staff and admin.is_superuser
    roadmap = Roadmap.objects.get(owner=demo)
    assert roadmap.preferences["language"] == "zh-CN"
    names = list(Concept.objects.filter(roadmap=roadmap).values_list("name", flat=True))
    assert len(names) == 6
    assert any(re.search(r"[\u4e00-\u9fff]", n) for n in names)
    assert any(n.isascii() for n in names)
    found = statuses()
    assert {pair: found[pair] for pair in EXPECTED_STATUSES} == EXPECTED_STATUSES
    rest = {status for pair, status in found.items() if pair not in EXPECTED_STATUSES}
    assert rest == {"pending"}
    assert len(found) == 18

    token = Token.objects.get(user=demo).key
    assert token in output
    assert "demo / demo" in output and "admin / admin" in output
    assert f'curl -H "Authorization: Token {token}"' in output
    assert f"/api/v1/roadmaps/{roadmap.pk}/" in output


def test_seeded_completed_content_is_really_generated():
    seed()

    tutorial = ConceptContent.objects.get(
        concept__concept_id="hooks_basics", content_type="tutorial"
    )
    assert (tutorial.version, tutorial.model) == (1, "offline")
    with default_storage.open(tutorial.content_ref) as file:
        markdown = file.read().decode()
    assert "React Hooks 基础" in markdown
    quiz = ConceptContent.objects.get(concept__concept_id="hooks_basics", content_type="quiz")
    assert quiz.payload["questions"]
    failed = ConceptContent.objects.get(concept__concept_id="memoization", content_type="resources")
    assert failed.public_error == "已被管理员标记为失败。"  # a zh-CN roadmap
    [task] = GenerationTask.objects.all()
    assert (task.total, task.completed, task.status) == (4, 4, "completed")


def test_running_seed_demo_twice_duplicates_nothing():
    first_output = seed()
    first = snapshot()

    second_output = seed()

    assert snapshot() == first
    token = Token.objects.get(user__username="demo").key
    assert token in first_output and token in second_output


async def test_printed_token_works_against_the_api(api):
    output = await seed_in_a_thread()
    token = re.search(r"API token:\s+([0-9a-f]{40})", output).group(1)
    roadmap_id = re.search(r"/api/v1/roadmaps/([0-9a-f-]{36})/", output).group(1)

    response = await api.get(
        f"/api/v1/roadmaps/{roadmap_id}/", headers={"Authorization": f"Token {token}"}
    )

    assert response.status_code == 200
    counts = response.json()["status_counts"]
    assert counts["tutorial"] == {"pending": 3, "generating": 0, "completed": 2, "failed": 1}


async def test_seeded_roadmap_is_private_to_the_demo_user(api, alice):
    output = await seed_in_a_thread()
    roadmap_id = re.search(r"/api/v1/roadmaps/([0-9a-f-]{36})/", output).group(1)

    response = await api.get(f"/api/v1/roadmaps/{roadmap_id}/", headers=auth(alice))

    assert response.status_code == 404


def test_seed_demo_creates_no_known_admin_password_with_debug_off(settings):
    settings.DEBUG = False
    output = seed()

    assert not get_user_model().objects.filter(username="admin").exists()
    assert "Admin:      not created" in output
