from django.urls import re_path

from roadmap_project.routers import OptionalSlashRouter
from roadmaps.serializers import CONCEPT_ID_PATTERN
from roadmaps.views import RoadmapViewSet, TokenView, TutorialFileView

UUID_PATTERN = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
CONCEPT_ID = CONCEPT_ID_PATTERN.strip("^$")

router = OptionalSlashRouter()
router.register("roadmaps", RoadmapViewSet, basename="roadmap")

urlpatterns = [
    re_path(r"^auth/token/?$", TokenView.as_view(), name="auth-token"),
    # `content_url` of a tutorial version; next to the tutorial endpoint
    # (…/concepts/{concept_id}/tutorial) that generation routes.
    re_path(
        rf"^roadmaps/(?P<roadmap_id>{UUID_PATTERN})/concepts/(?P<concept_id>{CONCEPT_ID})"
        r"/tutorial/v(?P<version>[1-9][0-9]{0,8})\.md/?$",
        TutorialFileView.as_view(),
        name="tutorial-file",
    ),
    *router.urls,
]
