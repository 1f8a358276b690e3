"""The API's error table: every domain error answers the status DESIGN §4 gives
it, and a 429 says with `code` whether a rate limit, the cap on active work or
the daily token budget refused the start."""

import pytest
from asgiref.sync import sync_to_async

# The modules that define domain errors, so that every one is a subclass by now.
import generation.errors
import generation.tutorial_files  # noqa: F401
import roadmaps.services  # noqa: F401
from roadmap_project.errors import ERRORS, DomainError
from tests.conftest import auth

pytestmark = pytest.mark.django_db(transaction=True)

# DESIGN §4, by the code each domain error carries.
DOCUMENTED_STATUS = {
    "selection_too_large": 400,  # "A selection above the cap … answers 400"
    "not_generated": 404,  # "404 with {"detail", "status"} when no version was ever completed"
    "file_missing": 404,
    "not_generating": 404,  # "When the pair is not generating: 404 {"detail", "status"}"
    "already_generating": 409,  # "409 — already generating"
    "task_not_running": 409,  # "Cancelling a finished task answers 409"
    "generation_in_flight": 409,  # "DELETE … 409 while any of its content is generating"
    "active_limit": 429,  # "The cap on active work answers 429 with "code": "active_limit""
    "budget_exceeded": 429,  # "would take the user past the daily token budget answers 429"
}


def domain_errors(base: type = DomainError) -> list[type]:
    """Every concrete domain error: the subclasses that name a code."""
    found = []
    for sub in base.__subclasses__():
        found += ([sub] if "code" in vars(sub) else []) + domain_errors(sub)
    return found


def test_every_domain_error_code_answers_its_documented_status():
    codes = [error.code for error in domain_errors()]
    assert len(codes) == len(set(codes)), codes  # one meaning per code

    assert {code: ERRORS[code].status for code in codes} == DOCUMENTED_STATUS
    assert set(ERRORS) == set(codes)  # no row answers an error that no longer exists


async def test_plain_rate_limiting_answers_429_with_code_throttled(
    api, alice, make_roadmap, settings, no_runner
):
    settings.RETRY_THROTTLE_RATE = "1/minute"
    first, second = [await sync_to_async(make_roadmap)(alice) for _ in range(2)]

    started = await api.post(f"/api/v1/roadmaps/{first.pk}/generate", headers=auth(alice))
    refused = await api.post(f"/api/v1/roadmaps/{second.pk}/generate", headers=auth(alice))

    assert started.status_code == 202, started.text
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["code"] == "throttled"
    assert set(refused.json()) == {"detail", "code"}
