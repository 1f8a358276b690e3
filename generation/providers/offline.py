"""Deterministic sample content for development and demos: no network, no key.

`OfflineTransport` answers like a model would, under the same policy as the
OpenAI transport (generation.providers.policy): it reads the concept from the
prompt (generation.providers.prompts) and streams its sample answer in small
chunks, so that one answer takes OFFLINE_PROVIDER_DELAY_SECONDS and live content
shows it being written."""

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pydantic
from django.conf import settings

from generation.providers import prompts
from generation.providers.base import Chunk, Messages
from generation.schemas import Question, Quiz, Resource, ResourceList

MODEL_NAME = "offline"
# About a model token or two: small enough that a tutorial is seen being written.
CHUNK_CHARS = 6
# The length of a sample tutorial, which progress is estimated against.
EXPECTED_TUTORIAL_CHARS = 400

# The lines of prompts._context this transport reads back.
_CONTEXT = re.compile(
    r"Learner's goal: (?P<goal>.*?)\nConcept: (?P<name>.*?)\n"
    r"(?:Concept description: (?P<description>.*?)\n)?Learner's level: .*?"
    r"\nWrite every human-readable text in (?P<language>.*?)\.\n\n",
    re.DOTALL,
)
_CHINESE = {prompts.language_name("zh"), prompts.language_name("zh-Hant")}


@dataclass(frozen=True)
class _Asked:
    """What the sample content depends on, as the prompt states it."""

    name: str
    description: str
    goal: str
    chinese: bool


def _asked(messages: Messages) -> _Asked:
    context = next(m["content"] for m in messages if m["role"] == "user")
    found = _CONTEXT.search(context)
    if found is None:
        raise ValueError("the offline transport cannot read the concept from the prompt")
    return _Asked(
        name=found["name"],
        description=found["description"] or found["name"],
        goal=found["goal"],
        chinese=found["language"] in _CHINESE,
    )


def _slug(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def sample_tutorial(asked: _Asked) -> str:
    """Markdown in the format the tutorial prompt asks for: title, summary, body."""
    name = asked.name
    if asked.chinese:
        title = f"{name}：入门教程"
        summary = f"{name} 的核心概念、常见用法与练习。"
        body = (
            f"## 为什么要学\n\n{asked.description} 是实现「{asked.goal}」的基础。\n\n"
            f"## 要点\n\n1. 理解 {name} 解决的问题。\n2. 动手写一个最小示例。\n"
            "3. 总结常见错误。\n"
        )
    else:
        title = f"{name}: a first tutorial"
        summary = f"The core ideas of {name}, how it is used, and a short exercise."
        body = (
            f'## Why it matters\n\n{asked.description} is a step towards "{asked.goal}".\n\n'
            f"## Key points\n\n1. Understand the problem {name} solves.\n"
            "2. Write a minimal example.\n3. Review the common mistakes.\n"
        )
    return f"# {title}\n\n{summary}\n\n{body}"


def sample_resources(asked: _Asked) -> ResourceList:
    slug, name, zh = _slug(asked.name), asked.name, asked.chinese
    return ResourceList(
        items=[
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
    )


def sample_quiz(asked: _Asked) -> Quiz:
    name, zh = asked.name, asked.chinese
    return Quiz(
        questions=[
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
    )


def sample_answer(messages: Messages, schema: type[pydantic.BaseModel] | None) -> str:
    """The whole answer's text: the tutorial's Markdown, or the JSON `schema` asks for."""
    asked = _asked(messages)
    if schema is None:
        return sample_tutorial(asked)
    if schema is ResourceList:
        return sample_resources(asked).model_dump_json()
    if schema is Quiz:
        return sample_quiz(asked).model_dump_json()
    raise TypeError(f"the offline transport has no sample {schema.__name__}")


class OfflineTransport:
    """Implements generation.providers.base.Transport with sample answers, each
    streamed in CHUNK_CHARS pieces evenly over OFFLINE_PROVIDER_DELAY_SECONDS."""

    name = MODEL_NAME
    model = MODEL_NAME

    async def stream(
        self, messages: Messages, *, schema: type[pydantic.BaseModel] | None = None
    ) -> AsyncIterator[Chunk]:
        text = sample_answer(messages, schema)
        pieces = [text[start : start + CHUNK_CHARS] for start in range(0, len(text), CHUNK_CHARS)]
        pause = settings.OFFLINE_PROVIDER_DELAY_SECONDS / len(pieces)
        for index, piece in enumerate(pieces, start=1):
            await asyncio.sleep(pause)
            finish_reason = "stop" if index == len(pieces) else None
            yield Chunk(text=piece, model=MODEL_NAME, finish_reason=finish_reason)
