from django.urls import re_path

from generation import views

UUID = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
ROADMAP = r"^roadmaps/(?P<roadmap_id>" + UUID + ")"
CONCEPT = ROADMAP + r"/concepts/(?P<concept_id>[A-Za-z0-9_-]{1,64})"
CONTENT_TYPE = r"(?P<content_type>tutorial|resources|quiz)"

urlpatterns = [
    re_path(
        CONCEPT + "/" + CONTENT_TYPE + r"/retry/?$",
        views.RetryContentView.as_view(),
        name="content-retry",
    ),
    re_path(CONCEPT + "/" + CONTENT_TYPE + r"/?$", views.ContentView.as_view(), name="content"),
    re_path(
        ROADMAP + r"/concepts/retry-batch/?$", views.RetryBatchView.as_view(), name="retry-batch"
    ),
    re_path(ROADMAP + r"/generate/?$", views.GenerateRoadmapView.as_view(), name="generate"),
    re_path(
        r"^tasks/(?P<task_id>[A-Za-z0-9_-]{1,64})/cancel/?$",
        views.CancelTaskView.as_view(),
        name="task-cancel",
    ),
    re_path(r"^tasks/(?P<task_id>[A-Za-z0-9_-]{1,64})/?$", views.TaskView.as_view(), name="task"),
]
