"""The offline provider: the shared policy over a transport that streams sample
content, so development and demos show live content without a key (DESIGN §6)."""

import hashlib
import time

import pytest

from generation.providers import GenerationRequest, get_provider
from generation.providers.base import activity_reported_to
from generation.providers.offline import OfflineTransport
from generation.providers.policy import Policy
from tests.support.output import RecordingSink


def hooks(language: str = "en", **fields: str) -> GenerationRequest:
    return GenerationRequest(
        roadmap_title=fields.get("roadmap_title", "Learn React"),
        roadmap_goal=fields.get("roadmap_goal", "Ship production apps"),
        concept_name=fields.get("concept_name", "React Hooks"),
        concept_description=fields.get("concept_description", "useState, useEffect"),
        preferences={"language": language, "level": "advanced", "focus": "custom\nhooks"},
    )


def slug(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:10]


async def test_offline_provider_is_the_policy_over_the_offline_transport():
    provider = get_provider()

    assert isinstance(provider, Policy) and isinstance(provider.transport, OfflineTransport)
    assert provider.name == "offline"


async def test_tutorial_is_written_in_small_chunks_over_the_delay(settings):
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.3
    sink = RecordingSink()
    progress: list[int] = []
    signs: list[None] = []

    async def on_progress(percentage: int) -> None:
        progress.append(percentage)

    started = time.monotonic()
    with activity_reported_to(lambda: signs.append(None)):
        draft, model = await get_provider().tutorial(hooks(), on_progress, sink)
    elapsed = time.monotonic() - started

    assert model == "offline"
    assert 0.3 <= elapsed < 3
    [written] = sink.answers()
    deltas = sink.texts()
    assert len(deltas) >= 20 and all(0 < len(delta) <= 6 for delta in deltas)
    assert len(written) == len(deltas) == len(signs)  # every chunk a sign of life
    assert "".join(deltas).strip() + "\n" == draft.markdown
    # Progress rises through the stream, as with a model, and ends at 100.
    assert progress == sorted(set(progress)) and progress[-1] == 100
    assert len(progress) >= 10 and progress[-2] >= 50


async def test_every_answer_starts_over_and_items_come_one_at_a_time():
    provider = get_provider()
    sink = RecordingSink()

    resources, _ = await provider.resources(hooks(), sink)
    quiz, _ = await provider.quiz(hooks(), sink)

    restarts = [kind for kind, _, _ in sink.calls].count("restart")
    resources_written, quiz_written = sink.answers()
    assert restarts == 2
    assert [value for _, value, _ in resources_written] == [
        [item.model_dump(mode="json")] for item in resources.items
    ]
    assert [value for _, value, _ in quiz_written] == [
        [question.model_dump(mode="json")] for question in quiz.questions
    ]


async def test_content_is_the_english_sample():
    provider = get_provider()

    async def nothing(percentage: int) -> None:
        pass

    tutorial, _ = await provider.tutorial(hooks(), nothing)
    resources, _ = await provider.resources(hooks())
    quiz, _ = await provider.quiz(hooks())

    assert tutorial.title == "React Hooks: a first tutorial"
    assert tutorial.summary == (
        "The core ideas of React Hooks, how it is used, and a short exercise."
    )
    assert tutorial.markdown.startswith("# React Hooks: a first tutorial\n\n")
    assert 'useState, useEffect is a step towards "Ship production apps".' in tutorial.markdown
    assert [(r.title, str(r.url), r.type, r.estimated_minutes) for r in resources.items] == [
        (
            "React Hooks: official documentation",
            f"https://example.com/docs/{slug('React Hooks')}",
            "documentation",
            30,
        ),
        (
            "React Hooks explained (video)",
            f"https://example.com/videos/{slug('React Hooks')}",
            "video",
            15,
        ),
    ]
    assert [(q.question_id, q.type, q.question, q.options) for q in quiz.questions] == [
        (
            "q1",
            "single_choice",
            "What problem does React Hooks solve?",
            ["State", "Styling", "Deploys"],
        ),
        ("q2", "true_false", "React Hooks takes practice.", ["True", "False"]),
    ]


@pytest.mark.parametrize("language", ["zh-CN", "zh-TW"])
async def test_content_is_in_chinese_for_chinese_roadmaps(language):
    provider = get_provider()
    request = hooks(language, concept_name="状态钩子 🎣", concept_description="", roadmap_goal="")

    async def nothing(percentage: int) -> None:
        pass

    tutorial, _ = await provider.tutorial(request, nothing)
    resources, _ = await provider.resources(request)
    quiz, _ = await provider.quiz(request)

    assert tutorial.title == "状态钩子 🎣：入门教程"
    assert tutorial.summary == "状态钩子 🎣 的核心概念、常见用法与练习。"
    # No description and no goal: the concept's name and the roadmap's title stand in.
    assert "状态钩子 🎣 是实现「Learn React」的基础。" in tutorial.markdown
    assert [r.title for r in resources.items] == ["状态钩子 🎣 官方文档", "状态钩子 🎣 视频讲解"]
    assert [q.options for q in quiz.questions] == [["状态管理", "样式", "部署"], ["对", "错"]]


async def test_a_prompt_it_cannot_read_is_an_error_not_sample_content():
    stream = OfflineTransport().stream([{"role": "user", "content": "Write a poem."}])

    with pytest.raises(ValueError, match="cannot read the concept"):
        await anext(stream)
