from django.urls import re_path
from rest_framework.routers import SimpleRouter

from roadmaps.views import RoadmapViewSet, TokenView


class OptionalSlashRouter(SimpleRouter):
    """Every path answers with and without its trailing slash (DESIGN §4)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("roadmaps", RoadmapViewSet, basename="roadmap")

urlpatterns = [
    re_path(r"^auth/token/?$", TokenView.as_view(), name="auth-token"),
    *router.urls,
]
