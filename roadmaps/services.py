"""Writes of roadmap structure (never of generation status: see generation.services)."""

import uuid
from dataclasses import dataclass

from django.db import transaction

from roadmap_project.errors import DomainError
from roadmaps import hooks
from roadmaps.models import Concept, ConceptContent, ContentType, Module, Roadmap, Stage
from roadmaps.selectors import has_generation_in_flight


class GenerationInFlight(DomainError):
    """The roadmap has content being generated, so it is not deleted under its workers."""

    code = "generation_in_flight"
    message = "Content of this roadmap is being generated; cancel its tasks first."

    def __init__(self) -> None:
        super().__init__(self.message)


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
    # One INSERT per level, not per row: a roadmap at the limits has 750 rows
    # above its contents, and the SQLite writer is held for all of them.
    stage_rows = list(enumerate(framework["stages"], start=1))
    stages = Stage.objects.bulk_create(
        Stage(
            roadmap=roadmap,
            stage_id=data.get("stage_id") or f"stage_{order}",
            name=data["name"],
            order=order,
        )
        for order, data in stage_rows
    )
    module_rows = [
        (stage, order, data)
        for stage, (_, stage_data) in zip(stages, stage_rows, strict=True)
        for order, data in enumerate(stage_data.get("modules", []), start=1)
    ]
    modules = Module.objects.bulk_create(
        Module(
            stage=stage,
            module_id=data.get("module_id") or f"module_{stage.order}_{order}",
            name=data["name"],
            order=order,
        )
        for stage, order, data in module_rows
    )
    concept_rows = [
        (module, data)
        for module, (_, _, module_data) in zip(modules, module_rows, strict=True)
        for data in module_data.get("concepts", [])
    ]
    concepts = Concept.objects.bulk_create(
        Concept(
            roadmap=roadmap,
            module=module,
            concept_id=data.get("concept_id") or uuid.uuid4().hex[:12],
            name=data["name"],
            description=data.get("description", ""),
            order=order,
        )
        for order, (module, data) in enumerate(concept_rows, start=1)
    )
    ConceptContent.objects.bulk_create(
        ConceptContent(concept=concept, roadmap=roadmap, content_type=content_type)
        for concept in concepts
        for content_type in ContentType.values
    )
    task_id = hooks.start_generation(roadmap=roadmap, user=owner) if generate else None
    return CreatedRoadmap(roadmap=roadmap, task_id=task_id)


@transaction.atomic
def delete_roadmap(*, roadmap: Roadmap) -> None:
    """Delete a roadmap unless work is in flight. The roadmap row is locked first,
    as every generation transition does, so nothing can start between the check
    and the delete, and the cascade never deadlocks with a running transition.
    Its tutorial files are deleted once this commits
    (generation.tutorial_files.delete_tutorials_with_roadmap)."""
    list(Roadmap.objects.select_for_update().filter(pk=roadmap.pk).values_list("pk"))
    if has_generation_in_flight(roadmap=roadmap):
        raise GenerationInFlight()
    roadmap.delete()
