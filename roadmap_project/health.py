"""Liveness of the two things every request depends on."""

import asyncio

from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse


async def _layer_ok() -> bool:
    layer = get_channel_layer()
    try:
        async with asyncio.timeout(2):
            # A publish to a group nobody watches: reaches the broker, leaves nothing.
            await layer.group_send("health", {"type": "health.check"})
            return True
    except Exception:
        return False


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


async def health(request) -> JsonResponse:
    """200 when the database answers; the channel layer is reported, not required (I6)."""
    from asgiref.sync import sync_to_async

    database = await sync_to_async(_database_ok)()
    layer = await _layer_ok()
    body = {
        "status": "ok" if database else "unavailable",
        "database": "ok" if database else "unavailable",
        "channel_layer": "ok" if layer else "unavailable",
    }
    return JsonResponse(body, status=200 if database else 503)
