from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from generation.metrics import metrics
from roadmap_project.health import health
from roadmaps import pages

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
    # The reference web client (roadmaps.pages): session login, then pages that
    # act only through the API above.
    path("", pages.roadmap_list, name="roadmap-list"),
    path("roadmaps/<uuid:roadmap_id>/", pages.roadmap_page, name="roadmap-page"),
    path("login/", pages.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    # Prometheus scrapes it (generation.metrics): outside the API, like every exporter.
    re_path(r"^metrics/?$", metrics, name="metrics"),
]
