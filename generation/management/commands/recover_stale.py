from django.core.management.base import BaseCommand

from generation import services


class Command(BaseCommand):
    help = "Fail every generation whose lease expired (a dead worker or a lost message)."

    def handle(self, *args, **options) -> None:
        recovered = services.recover_stale()
        self.stdout.write(f"Recovered {recovered} stale generation(s).")
