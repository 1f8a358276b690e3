"""Tutorial Markdown files, one per version, through Django's storage API (DESIGN §6).

Files are written before the transaction that publishes them, so no storage I/O
runs under the roadmap lock; a version that does not land deletes its file."""

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from roadmaps.models import ConceptContent


def save_tutorial(content: ConceptContent, *, markdown: str, version: int) -> str:
    """Store one version's Markdown; returns the storage name (`content_ref`)."""
    name = f"tutorials/{content.roadmap_id}/{content.concept.concept_id}/v{version}.md"
    return default_storage.save(name, ContentFile(markdown.encode()))


def delete_tutorial(name: str) -> None:
    default_storage.delete(name)


def read_tutorial(content: ConceptContent) -> str:
    with default_storage.open(content.content_ref) as file:
        return file.read().decode()
