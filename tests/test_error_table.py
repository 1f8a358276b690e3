"""The API's error table: every domain error answers the status DESIGN §4 gives it."""

# The modules that define domain errors, so that every one is a subclass by now.
import generation.errors
import generation.tutorial_files  # noqa: F401
import roadmaps.services  # noqa: F401
from roadmap_project.errors import ERRORS, DomainError

# DESIGN §4, by the code each domain error carries.
DOCUMENTED_STATUS = {
    "selection_too_large": 400,  # "A selection above the cap … answers 400"
    "not_generated": 404,  # "404 with {"detail", "status"} when no version was ever completed"
    "file_missing": 404,
    "already_generating": 409,  # "409 — already generating"
    "task_not_running": 409,  # "Cancelling a finished task answers 409"
    "generation_in_flight": 409,  # "DELETE … 409 while any of its content is generating"
    "active_limit": 429,  # "The cap on active work answers 429 with "code": "active_limit""
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
