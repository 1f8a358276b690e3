"""`python manage.py seed_demo`: a demo user with a token, an admin account, and a
sample roadmap with completed, failed and pending content (DESIGN §7).

Idempotent: a second run finds everything in place and changes nothing. The
completed content is really generated, through the same services as the API, by
the offline provider (deterministic sample text labelled "offline")."""

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.test.utils import override_settings
from rest_framework.authtoken.models import Token

from generation import engine, services
from generation.models import GenerationTask, TaskKind, TaskStatus
from generation.providers import reset_provider
from roadmaps.models import ConceptContent, ContentStatus, ContentType, Roadmap
from roadmaps.selectors import status_counts
from roadmaps.services import create_roadmap

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"
DEMO_TITLE = "学习 React · Learn React (demo)"
DEMO_FRAMEWORK = {
    "stages": [
        {
            "name": "基础 Foundations",
            "modules": [
                {
                    "name": "Hooks",
                    "concepts": [
                        {
                            "concept_id": "hooks_basics",
                            "name": "React Hooks 基础",
                            "description": "useState, useEffect",
                        },
                        {
                            "concept_id": "jsx_components",
                            "name": "JSX and components",
                            "description": "Props, children and composition",
                        },
                        {
                            "concept_id": "state_management",
                            "name": "状态管理",
                            "description": "Lifting state up, context and reducers",
                        },
                    ],
                }
            ],
        },
        {
            "name": "进阶 Advanced",
            "modules": [
                {
                    "name": "Performance and quality",
                    "concepts": [
                        {
                            "concept_id": "memoization",
                            "name": "useMemo 与 useCallback",
                            "description": "When memoization pays off",
                        },
                        {
                            "concept_id": "routing",
                            "name": "React Router",
                            "description": "Nested routes and data loading",
                        },
                        {
                            "concept_id": "testing",
                            "name": "测试 React 组件",
                            "description": "Testing Library and user-centric tests",
                        },
                    ],
                }
            ],
        },
    ]
}
# Which pairs end up completed and which failed; every other pair stays pending.
COMPLETED = {
    "hooks_basics": ContentType.values,
    "jsx_components": [ContentType.TUTORIAL],
}
FAILED = {
    "state_management": [ContentType.TUTORIAL, ContentType.QUIZ],
    "memoization": [ContentType.RESOURCES],
}
GENERATION_TIMEOUT_SECONDS = 120


def pairs(roadmap: Roadmap, selection: dict[str, list[str]]) -> list[ConceptContent]:
    """The still-pending contents of `selection`, in roadmap order."""
    contents = ConceptContent.objects.filter(
        roadmap=roadmap, status=ContentStatus.PENDING
    ).select_related("concept", "roadmap")
    return [
        content
        for content in contents
        if content.content_type in selection.get(content.concept.concept_id, ())
    ]


class Command(BaseCommand):
    help = (
        "Create a demo user (demo/demo) with a token, an admin (admin/admin) and a sample "
        "roadmap with completed, failed and pending content. Safe to run again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the server runs, for the printed instructions.",
        )

    def handle(self, *args, **options) -> None:
        demo, token = self.ensure_demo_user()
        self.ensure_admin()
        roadmap = self.ensure_roadmap(demo)
        self.generate(roadmap, demo)
        for content in pairs(roadmap, FAILED):
            services.reset_status(content=content, status=ContentStatus.FAILED)
        self.print_instructions(roadmap, token, options["base_url"].rstrip("/"))

    def ensure_demo_user(self):
        user_model = get_user_model()
        demo = user_model.objects.filter(username=DEMO_USERNAME).first()
        if demo is None:
            demo = user_model.objects.create_user(username=DEMO_USERNAME, password=DEMO_PASSWORD)
        token, _ = Token.objects.get_or_create(user=demo)
        return demo, token.key

    def ensure_admin(self) -> None:
        """A known superuser password is for development only."""
        if not settings.DEBUG:
            return
        user_model = get_user_model()
        if not user_model.objects.filter(username=ADMIN_USERNAME).exists():
            user_model.objects.create_superuser(
                username=ADMIN_USERNAME, email="", password=ADMIN_PASSWORD
            )

    def ensure_roadmap(self, demo) -> Roadmap:
        with transaction.atomic():
            roadmap = Roadmap.objects.filter(owner=demo, title=DEMO_TITLE).first()
            if roadmap is None:
                roadmap = create_roadmap(
                    owner=demo,
                    title=DEMO_TITLE,
                    goal="Build and ship a production React app · 能独立开发上线 React 应用",
                    preferences={"language": "zh-CN", "level": "beginner"},
                    framework=DEMO_FRAMEWORK,
                ).roadmap
        return roadmap

    def generate(self, roadmap: Roadmap, demo) -> None:
        """Generate the still-pending pairs of COMPLETED with the offline provider
        and wait for them: with the in-process engine, this process does the work."""
        contents = pairs(roadmap, COMPLETED)
        if not contents:
            return
        in_process = settings.TASK_BACKEND == "inprocess"
        with override_settings(GENERATION_PROVIDER="offline"):
            reset_provider()
            try:
                result = services.start_generation(
                    roadmap=roadmap, user=demo, kind=TaskKind.GENERATE, contents=contents
                )
                if result.task is not None:
                    self.stdout.write(f"Generating {result.task.total} sample content(s)…")
                    if in_process:
                        engine.wait_until_idle(GENERATION_TIMEOUT_SECONDS)
                    self.wait_for(result.task)
            finally:
                reset_provider()

    def wait_for(self, task: GenerationTask) -> None:
        """Poll the task row: works whichever engine (in-process or Celery) runs it."""
        deadline = time.monotonic() + GENERATION_TIMEOUT_SECONDS
        while GenerationTask.objects.filter(pk=task.pk, status=TaskStatus.RUNNING).exists():
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Sample generation (task {task.pk}) did not finish in "
                    f"{GENERATION_TIMEOUT_SECONDS} s; is a worker running?"
                )
            time.sleep(0.2)

    def print_instructions(self, roadmap: Roadmap, token: str, base_url: str) -> None:
        counts = status_counts(roadmap_ids=[roadmap.pk])[roadmap.pk]
        totals = {
            status: sum(by_status[status] for by_status in counts.values())
            for status in ContentStatus.values
        }
        summary = ", ".join(f"{n} {status}" for status, n in totals.items())
        lines = [
            "Demo data ready.",
            f"  API user:   {DEMO_USERNAME} / {DEMO_PASSWORD}",
            f"  API token:  {token}",
            f"  Admin:      {base_url}/admin/  ({ADMIN_USERNAME} / {ADMIN_PASSWORD})"
            if settings.DEBUG
            else "  Admin:      not created (DEBUG is off; use createsuperuser)",
            f"  Roadmap:    {roadmap.pk}  {roadmap.title}",
            f"  Content:    {summary}",
            "Try:",
            f'  curl -H "Authorization: Token {token}" {base_url}/api/v1/roadmaps/{roadmap.pk}/',
            f'  curl -X POST -H "Authorization: Token {token}" '
            f"{base_url}/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch",
        ]
        if not settings.DEBUG:
            lines.append("Warning: DEBUG is off. Change the demo passwords before exposing this.")
        self.stdout.write("\n".join(lines))
