"""Bulk retry across roadmaps (DESIGN §7), through the same action as the API."""

import time
import uuid

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from generation import selectors, services
from generation.models import GenerationTask, TaskStatus
from roadmaps.models import ConceptContent, ContentStatus, ContentType

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = (
        "Bulk-retry content across roadmaps: one batch task per roadmap. With the "
        "in-process engine the command runs the work itself and always waits."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--roadmap", action="append", default=[], metavar="ID")
        parser.add_argument("--concept", action="append", default=[], metavar="ID")
        parser.add_argument(
            "--content-type", action="append", default=[], choices=ContentType.values
        )
        parser.add_argument(
            "--status",
            action="append",
            default=[],
            choices=ContentStatus.values,
            help="Statuses to select (default: failed).",
        )
        parser.add_argument("--limit", type=int, help="Retry at most N pairs.")
        parser.add_argument("--dry-run", action="store_true", help="Show the selection only.")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Show progress until done; exit 1 if anything failed.",
        )

    def handle(self, *args, **options) -> None:
        contents = self.selection(options)
        for content in contents:
            self.stdout.write(
                f"{content.roadmap_id}  {content.concept.concept_id:<24} "
                f"{content.content_type:<10} {content.status}"
            )
        self.stdout.write(f"{len(contents)} pair(s) selected.")
        if options["dry_run"] or not contents:
            return
        results = services.retry_contents(
            contents=ConceptContent.objects.filter(pk__in=[c.pk for c in contents])
        )
        tasks = [result.task for result in results if result.task is not None]
        for result in results:
            for skipped in result.skipped:
                self.stdout.write(
                    f"skipped {skipped.concept_id} {skipped.content_type}: {skipped.reason}"
                )
        for task in tasks:
            self.stdout.write(f"task {task.pk} ({task.total} pair(s))")
        in_process = settings.TASKS["default"]["BACKEND"] != "django_tasks_celery.CeleryBackend"
        if tasks and (options["wait"] or in_process):
            self.wait(tasks)

    def selection(self, options) -> list[ConceptContent]:
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be a positive number.")
        contents = ConceptContent.objects.filter(
            status__in=options["status"] or [ContentStatus.FAILED]
        )
        if options["roadmap"]:
            contents = contents.filter(roadmap_id__in=[parse_uuid(r) for r in options["roadmap"]])
        if options["concept"]:
            contents = contents.filter(concept__concept_id__in=options["concept"])
        if options["content_type"]:
            contents = contents.filter(content_type__in=options["content_type"])
        contents = selectors.contents_in_batch_order(contents)
        return list(contents[: options["limit"]] if options["limit"] else contents)

    def wait(self, tasks: list[GenerationTask]) -> None:
        ids = [task.pk for task in tasks]
        total = sum(task.total for task in tasks)
        with tqdm(total=total, unit="pair", file=self.stderr) as bar:
            while True:
                current = list(GenerationTask.objects.filter(pk__in=ids))
                done = sum(t.completed + t.failed + t.cancelled for t in current)
                bar.update(done - bar.n)
                if all(t.status != TaskStatus.RUNNING for t in current):
                    break
                time.sleep(POLL_SECONDS)
        completed = sum(t.completed for t in current)
        failed = sum(t.failed + t.cancelled for t in current)
        self.stdout.write(f"{completed} completed, {failed} failed.")
        if failed:
            raise CommandError(f"{failed} pair(s) failed.", returncode=1)


def parse_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"--roadmap {value!r} is not a roadmap id (a UUID).") from None
