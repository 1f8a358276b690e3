import itertools

from django.db.backends.signals import connection_created
from django.http import JsonResponse
from django.urls import path

from roadmap_project.urls import urlpatterns as product_urlpatterns

# Every SQL statement this process runs, on any connection made from here on (the
# URLconf loads with the first request, before the first connection is made):
# what idle sockets cost the store (bench/idle_sockets.py).
_statements = itertools.count()


def _count(execute, sql, params, many, context):
    next(_statements)
    return execute(sql, params, many, context)


def _count_on(sender, connection, **kwargs) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


connection_created.connect(_count_on)


async def trivial(request) -> JsonResponse:
    """No database, no authentication: what the server itself costs per request."""
    return JsonResponse({"ok": True})


async def statements(request) -> JsonResponse:
    """How many SQL statements the process has run (this call adds none)."""
    return JsonResponse({"statements": next(_statements)})


urlpatterns = [
    path("bench/trivial", trivial),
    path("bench/statements", statements),
    *product_urlpatterns,
]
