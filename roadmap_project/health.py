"""Liveness of the two things every request depends on."""

import asyncio

from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse

from roadmap_project import monitoring
from roadmap_project.hooks import Hook

# Each generation provider's circuit, by name (generation registers it): for
# operators only, as it names the deployment's providers.
provider_states: Hook = Hook("provider_states")


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
    if database and await _for_operators(request):
        body["providers"] = await sync_to_async(provider_states)()
    return JsonResponse(body, status=200 if database else 503)


async def _for_operators(request) -> bool:
    """A staff session or the metrics token (roadmap_project.monitoring); anyone
    else gets the public body, without an error."""
    token = monitoring.bearer_token(request)
    if token is not None:
        return monitoring.token_matches(token)
    user = await request.auser()
    return user.is_authenticated and user.is_staff
