from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from roadmap_project.health import health

api_patterns = [
    path("", include("roadmaps.urls")),
    path("", include("generation.urls")),
    re_path(r"^health/?$", health, name="health"),
    re_path(r"^schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(
        r"^redoc/?$",
        SpectacularRedocView.as_view(url_name="schema", template_name="docs/redoc.html"),
        name="redoc",
    ),
]

# JSON under /api/, Django's pages elsewhere (roadmap_project.errors).
handler400 = "roadmap_project.errors.bad_request"
handler404 = "roadmap_project.errors.page_not_found"
handler500 = "roadmap_project.errors.server_error"

# No /media/ route: the only files in storage are tutorials, and those are read
# through the API (roadmaps.views.TutorialFileView), by their owner only.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_patterns)),
]
