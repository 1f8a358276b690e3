"""Ageing stored events and running `manage.py prune_events`, as the pruning tests do."""

from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.utils import timezone

from notifications.models import Event


def age(days: float, **filters) -> None:
    Event.objects.filter(**filters).update(created_at=timezone.now() - timedelta(days=days))


def prune(*args: str) -> str:
    out = StringIO()
    call_command("prune_events", *args, stdout=out)
    return out.getvalue()
