"""Hooks between apps are registered in code and checked at start-up."""

import pytest
from django.core import checks

from notifications.hooks import authorize_stream
from roadmap_project.hooks import Hook
from roadmaps.hooks import start_generation

pytestmark = pytest.mark.django_db  # some system checks read the database


def test_generation_registers_every_hook_and_the_check_passes():
    assert authorize_stream.implementation is not None
    assert start_generation.implementation is not None
    assert [hook.name for hook in Hook.declared if hook.implementation is None] == []
    assert [e.id for e in checks.run_checks() if e.is_serious()] == []


def test_a_hook_nobody_registered_fails_the_check_at_start_up():
    unregistered = Hook("tests.unregistered")
    try:
        errors = [e for e in checks.run_checks() if e.id == "roadmap_project.E001"]
    finally:
        Hook.declared.remove(unregistered)

    assert [e.msg for e in errors] == ["Nothing registered the tests.unregistered hook."]
