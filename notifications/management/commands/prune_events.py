"""`python manage.py prune_events --older-than DAYS`: bound the event store's size."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser

from notifications.services import prune_events

MAX_DAYS = 36500


class Command(BaseCommand):
    help = (
        "Delete stored events older than DAYS days and print how many. A task's stream "
        "goes whole, once its final event is that old, so a stream never has a gap in "
        "its seq and a running task's events are never deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")

    def handle(self, *args, older_than: int, **options) -> None:
        if not 0 <= older_than <= MAX_DAYS:
            raise CommandError(f"--older-than must be between 0 and {MAX_DAYS} days.")
        deleted = prune_events(older_than=timedelta(days=older_than))
        self.stdout.write(f"Deleted {deleted} event(s) older than {older_than} day(s).")
