from django.urls import re_path

from roadmap_project.routers import OptionalSlashRouter
from roadmaps.views import RoadmapViewSet, TokenView

router = OptionalSlashRouter()
router.register("roadmaps", RoadmapViewSet, basename="roadmap")

urlpatterns = [
    re_path(r"^auth/token/?$", TokenView.as_view(), name="auth-token"),
    *router.urls,
]
