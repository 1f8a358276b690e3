"""Event `message` and `error` text is in the roadmap's language (DESIGN §5):
`preferences.language` starting with "zh" gives Simplified Chinese, anything else
LANGUAGE_CODE (English by default). The catalogue is locale/zh_Hans."""

import pytest

from generation import engine, services
from generation.providers import reset_provider
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.support.events import assert_valid_event

pytestmark = pytest.mark.django_db(transaction=True)


def run_retries(roadmap, user, settings) -> dict[str, dict]:
    """One retry that completes and one that fails (a provider that cannot be
    built); returns the last stored event of each type."""
    tutorial, quiz = (
        ConceptContent.objects.get(roadmap=roadmap, content_type=content_type)
        for content_type in ("tutorial", "quiz")
    )
    services.retry_content(content=tutorial, user=user)
    assert engine.wait_until_idle(30)
    settings.GENERATION_PROVIDER = "misconfigured"
    reset_provider()
    services.retry_content(content=quiz, user=user)
    assert engine.wait_until_idle(30)
    services.reset_status(content=tutorial, status="pending")
    events = {}
    for event in Event.objects.filter(topic=f"roadmap-{roadmap.pk}").order_by("id"):
        assert_valid_event(event.as_message())
        events[event.type] = event.body
    quiz.refresh_from_db()
    events["public_error"] = quiz.public_error
    return events


def test_chinese_roadmap_gets_chinese_messages_and_errors(alice, make_roadmap, settings):
    roadmap = make_roadmap(alice, preferences={"language": "zh-CN"})
    events = run_retries(roadmap, alice, settings)

    assert events["concept_start"]["message"] == "开始生成：Concept 1"
    assert events["concept_complete"]["message"] == "生成完成：Concept 1"
    assert events["concept_failed"]["message"] == "生成失败：Concept 1"
    assert events["concept_failed"]["error"] == "由于内部错误，生成失败。请稍后重试。"
    assert events["public_error"] == "由于内部错误，生成失败。请稍后重试。"
    assert events["status_changed"]["message"] == "Concept 1（教程）当前状态：待生成"


def test_english_roadmap_gets_english_messages(alice, make_roadmap, settings):
    roadmap = make_roadmap(alice, preferences={"language": "en"})
    events = run_retries(roadmap, alice, settings)

    assert events["concept_start"]["message"] == "Started generating: Concept 1"
    assert events["concept_complete"]["message"] == "Finished generating: Concept 1"
    assert events["concept_failed"]["error"] == (
        "Generation failed because of an internal error. Try again later."
    )
    assert events["status_changed"]["message"] == "Concept 1 (Tutorial) is now Pending"


@pytest.mark.parametrize(
    ("language_code", "expected"),
    [("en", "Started generating: Concept 1"), ("zh-hans", "开始生成：Concept 1")],
)
def test_language_code_is_the_default(alice, make_roadmap, settings, language_code, expected):
    """A roadmap without a Chinese preference speaks LANGUAGE_CODE."""
    settings.LANGUAGE_CODE = language_code
    roadmap = make_roadmap(alice, preferences={"language": "fr"})
    events = run_retries(roadmap, alice, settings)

    assert events["concept_start"]["message"] == expected
