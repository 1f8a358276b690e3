"""The hook through which roadmaps starts generating a new roadmap without
importing generation (which registers it)."""

from typing import Protocol

from roadmap_project.hooks import Hook
from roadmaps.models import Roadmap


class GenerationStarter(Protocol):
    def __call__(self, *, roadmap: Roadmap, user) -> str | None:
        """Start generating every pending pair, in the caller's transaction: the
        task id, or None when nothing is pending."""


start_generation: Hook[GenerationStarter] = Hook("roadmaps.start_generation")
