"""Deterministic sample content for development and demos: no network, no key."""

import asyncio
import hashlib

from django.conf import settings

from generation.providers.base import (
    DISCARD,
    GenerationRequest,
    ProgressCallback,
    report_activity,
)
from generation.schemas import Question, Quiz, Resource, ResourceList, TutorialDraft

MODEL_NAME = "offline"
PROGRESS_STEPS = 5


def _is_chinese(request: GenerationRequest) -> bool:
    return request.language.lower().startswith("zh")


def _slug(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


class OfflineProvider:
    name = MODEL_NAME
    model = MODEL_NAME

    async def _pause(self) -> None:
        """A stand-in for waiting on a model's bytes, which are signs of life."""
        await asyncio.sleep(settings.OFFLINE_PROVIDER_DELAY_SECONDS / PROGRESS_STEPS)
        report_activity()

    async def tutorial(
        self, request: GenerationRequest, on_progress: ProgressCallback, output=DISCARD
    ) -> tuple[TutorialDraft, str]:
        for step in range(1, PROGRESS_STEPS + 1):
            await self._pause()
            await on_progress(round(step / PROGRESS_STEPS * 100))
        name = request.concept_name
        if _is_chinese(request):
            title = f"{name}：入门教程"
            summary = f"{name} 的核心概念、常见用法与练习。"
            body = (
                f"# {title}\n\n## 为什么要学\n\n{request.concept_description or name} 是实现"
                f"「{request.roadmap_goal or request.roadmap_title}」的基础。\n\n## 要点\n\n"
                f"1. 理解 {name} 解决的问题。\n2. 动手写一个最小示例。\n3. 总结常见错误。\n"
            )
        else:
            title = f"{name}: a first tutorial"
            summary = f"The core ideas of {name}, how it is used, and a short exercise."
            body = (
                f"# {title}\n\n## Why it matters\n\n{request.concept_description or name} "
                f'is a step towards "{request.roadmap_goal or request.roadmap_title}".\n\n'
                f"## Key points\n\n1. Understand the problem {name} solves.\n"
                f"2. Write a minimal example.\n3. Review the common mistakes.\n"
            )
        return TutorialDraft(title=title, summary=summary, markdown=body), MODEL_NAME

    async def resources(
        self, request: GenerationRequest, output=DISCARD
    ) -> tuple[ResourceList, str]:
        await self._pause()
        slug = _slug(request.concept_name)
        name = request.concept_name
        zh = _is_chinese(request)
        items = [
            Resource(
                title=f"{name} 官方文档" if zh else f"{name}: official documentation",
                url=f"https://example.com/docs/{slug}",
                type="documentation",
                description="权威参考。" if zh else "The authoritative reference.",
                estimated_minutes=30,
            ),
            Resource(
                title=f"{name} 视频讲解" if zh else f"{name} explained (video)",
                url=f"https://example.com/videos/{slug}",
                type="video",
                description="十五分钟概览。" if zh else "A fifteen-minute overview.",
                estimated_minutes=15,
            ),
        ]
        return ResourceList(items=items), MODEL_NAME

    async def quiz(self, request: GenerationRequest, output=DISCARD) -> tuple[Quiz, str]:
        await self._pause()
        name = request.concept_name
        zh = _is_chinese(request)
        questions = [
            Question(
                question_id="q1",
                type="single_choice",
                question=f"{name} 主要解决什么问题？" if zh else f"What problem does {name} solve?",
                options=["状态管理", "样式", "部署"] if zh else ["State", "Styling", "Deploys"],
                correct_answers=[0],
                explanation="见教程第一节。" if zh else "See the tutorial's first section.",
                difficulty="easy",
            ),
            Question(
                question_id="q2",
                type="true_false",
                question=f"{name} 需要练习才能掌握。" if zh else f"{name} takes practice.",
                options=["对", "错"] if zh else ["True", "False"],
                correct_answers=[0],
                explanation="动手最重要。" if zh else "Practice matters most.",
                difficulty="easy",
            ),
        ]
        return Quiz(questions=questions), MODEL_NAME
