from django.http import JsonResponse
from django.urls import path

from roadmap_project.urls import urlpatterns as product_urlpatterns


async def trivial(request) -> JsonResponse:
    """No database, no authentication: what the server itself costs per request."""
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/trivial", trivial), *product_urlpatterns]
