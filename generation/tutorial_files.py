"""Tutorial Markdown files, one per version, through Django's storage API (DESIGN §6).

Files are written before the transaction that publishes them, so no storage I/O
runs under the roadmap lock; a version that does not land deletes its file. Every
file of a roadmap lives under its own folder, `tutorials/<roadmap_id>/`, so the
roadmap's deletion can remove all of them, older versions included
(`delete_tutorials_with_roadmap`, connected in generation.apps).
Nothing serves this folder publicly: the API streams a file to its owner."""

import logging
import os
from collections.abc import Iterator

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage
from django.db import transaction
from django.utils.translation import gettext_lazy

from roadmap_project.errors import DomainError
from roadmaps.models import ConceptContent, Roadmap

logger = logging.getLogger(__name__)


def roadmap_folder(roadmap_id) -> str:
    return f"tutorials/{roadmap_id}"


def save_tutorial(content: ConceptContent, *, markdown: str, version: int) -> str:
    """Store one version's Markdown; returns the storage name (`content_ref`)."""
    name = f"{roadmap_folder(content.roadmap_id)}/{content.concept.concept_id}/v{version}.md"
    return default_storage.save(name, ContentFile(markdown.encode()))


def delete_tutorial(name: str) -> None:
    default_storage.delete(name)


class TutorialFileMissing(DomainError):
    """Storage lost a file the database still names: not a bug in the request, so
    the API answers 404 with the pair's `status`, and an operator is told where the
    file was."""

    code = "file_missing"

    def __init__(self, content: ConceptContent) -> None:
        super().__init__(
            gettext_lazy(
                "The file of this content's last version is missing from storage; "
                "generate it again."
            )
        )
        self.status = content.status


def read_tutorial(content: ConceptContent) -> str:
    try:
        with default_storage.open(content.content_ref) as file:
            return file.read().decode()
    except FileNotFoundError:
        logger.warning(
            "Tutorial file %s of roadmap %s is missing from storage",
            content.content_ref,
            content.roadmap_id,
        )
        raise TutorialFileMissing(content) from None


def delete_roadmap_tutorials(roadmap_id) -> int:
    """Delete every tutorial file of a roadmap, each version of each concept: the
    database names only the current version, so the folder is listed. Returns how
    many files were deleted. Called once the roadmap's deletion has committed."""
    folder = roadmap_folder(roadmap_id)
    names = list(_files_under(default_storage, folder))
    for name in names:
        default_storage.delete(name)
    _remove_empty_local_folders(folder)
    logger.info("Deleted %d tutorial file(s) of roadmap %s", len(names), roadmap_id)
    return len(names)


def delete_tutorials_with_roadmap(sender, instance: Roadmap, using: str, **kwargs) -> None:
    """Roadmaps' post_delete receiver: generation wrote the files, so it removes
    them (roadmaps never imports generation). Whatever deletes a roadmap (the
    API's DELETE through roadmaps.services.delete_roadmap, a queryset delete, its
    owner's deletion), its tutorial files go too, once the deletion commits: a
    rollback keeps them. `robust`: a storage failure is logged and leaves orphan
    files, never turns a committed deletion into an error."""
    roadmap_id = instance.pk
    transaction.on_commit(lambda: delete_roadmap_tutorials(roadmap_id), using=using, robust=True)


def _files_under(storage: Storage, folder: str) -> Iterator[str]:
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:  # nothing was ever stored (local storage)
        return
    for file in files:
        yield f"{folder}/{file}"
    for sub in folders:
        yield from _files_under(storage, f"{folder}/{sub}")


def _remove_empty_local_folders(folder: str) -> None:
    """On a local file system, also drop the emptied folders (object stores such
    as S3 have none); a folder a late writer just refilled stays."""
    try:
        root = default_storage.path(folder)
    except NotImplementedError:
        return
    for path, _, _ in os.walk(root, topdown=False):
        try:
            os.rmdir(path)
        except OSError:
            pass
