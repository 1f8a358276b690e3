"""Reactions to roadmaps' model signals. Generation wrote the tutorial files, so
it removes them: roadmaps never imports generation."""

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from generation.tutorial_files import delete_roadmap_tutorials
from roadmaps.models import Roadmap


@receiver(post_delete, sender=Roadmap, dispatch_uid="generation.delete_roadmap_tutorials")
def delete_tutorials_with_roadmap(sender, instance: Roadmap, using: str, **kwargs) -> None:
    """Whatever deletes a roadmap (the API's DELETE through
    roadmaps.services.delete_roadmap, a queryset delete, its owner's deletion),
    its tutorial files go too, once the deletion commits: a rollback keeps them.
    `robust`: a storage failure is logged and leaves orphan files, never turns a
    committed deletion into an error."""
    roadmap_id = instance.pk
    transaction.on_commit(lambda: delete_roadmap_tutorials(roadmap_id), using=using, robust=True)
