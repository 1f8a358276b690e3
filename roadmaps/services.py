"""Writes of roadmap structure (never of generation status: see generation.services)."""

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from roadmaps.models import Concept, ConceptContent, ContentType, Module, Roadmap, Stage
from roadmaps.selectors import has_generation_in_flight


class GenerationInFlight(Exception):
    """The roadmap has content being generated; cancel its tasks first."""


@dataclass(frozen=True)
class CreatedRoadmap:
    roadmap: Roadmap
    task_id: str | None = None  # the generation started by `generate=True`, if any


@transaction.atomic
def create_roadmap(
    *,
    owner,
    title: str,
    goal: str = "",
    preferences: dict | None = None,
    framework: dict,
    generate: bool = False,
) -> CreatedRoadmap:
    """Create the whole tree in one transaction, every content `pending`; with
    `generate`, also start generating all of it in the same transaction, so the
    roadmap is never seen without its task. The framework is already validated
    (roadmaps.serializers)."""
    roadmap = Roadmap.objects.create(
        owner=owner, title=title, goal=goal, preferences=preferences or {}
    )
    concept_order = 0
    contents = []
    for stage_order, stage_data in enumerate(framework["stages"], start=1):
        stage = Stage.objects.create(
            roadmap=roadmap,
            stage_id=stage_data.get("stage_id") or f"stage_{stage_order}",
            name=stage_data["name"],
            order=stage_order,
        )
        for module_order, module_data in enumerate(stage_data.get("modules", []), start=1):
            module = Module.objects.create(
                stage=stage,
                module_id=module_data.get("module_id") or f"module_{stage_order}_{module_order}",
                name=module_data["name"],
                order=module_order,
            )
            for concept_data in module_data.get("concepts", []):
                concept_order += 1
                concept = Concept.objects.create(
                    roadmap=roadmap,
                    module=module,
                    concept_id=concept_data.get("concept_id") or uuid.uuid4().hex[:12],
                    name=concept_data["name"],
                    description=concept_data.get("description", ""),
                    order=concept_order,
                )
                contents += [
                    ConceptContent(concept=concept, roadmap=roadmap, content_type=content_type)
                    for content_type in ContentType.values
                ]
    ConceptContent.objects.bulk_create(contents)
    task_id = start_generation_of(roadmap, user=owner) if generate else None
    return CreatedRoadmap(roadmap=roadmap, task_id=task_id)


def start_generation_of(roadmap: Roadmap, *, user) -> str | None:
    """Start generating every pending pair through the hook the generation app
    provides (ROADMAP_GENERATION_STARTER), so roadmaps never imports generation.
    Returns the task id, or None when nothing is pending."""
    start = import_string(settings.ROADMAP_GENERATION_STARTER)
    return start(roadmap=roadmap, user=user)


@transaction.atomic
def delete_roadmap(*, roadmap: Roadmap) -> None:
    """Delete a roadmap unless work is in flight. The roadmap row is locked first,
    as every generation transition does, so nothing can start between the check
    and the delete, and the cascade never deadlocks with a running transition.
    Its tutorial files are deleted once this commits (generation.signals)."""
    list(Roadmap.objects.select_for_update().filter(pk=roadmap.pk).values_list("pk"))
    if has_generation_in_flight(roadmap=roadmap):
        raise GenerationInFlight(roadmap.pk)
    roadmap.delete()
