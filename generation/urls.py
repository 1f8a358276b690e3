"""Generation's routes. The roadmap-level actions register under the same
`roadmaps` prefix as roadmaps.urls' RoadmapViewSet: the two routers meet in the
project URLconf, and roadmaps never imports generation."""

from generation import views
from roadmap_project.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("roadmaps", views.RoadmapGenerationViewSet, basename="roadmap-generation")
router.register(views.CONCEPT_PREFIX, views.ContentViewSet, basename="content")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("usage", views.UsageViewSet, basename="usage")

urlpatterns = router.urls
