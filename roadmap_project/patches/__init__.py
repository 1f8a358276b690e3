"""Patches of other libraries' code, one module per library, each applied once
from the ASGI entry point and each with a test that fails when the upstream code
it relies on changes (tests/test_patches.py). Pinned versions: requirements.txt."""
