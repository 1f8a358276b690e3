"""`manage.py retry_content --wait` as a real process against the fake OpenAI
server: its exit status says whether every selected pair completed."""

import subprocess

import pytest

from roadmaps.models import ConceptContent
from tests.support.fake_openai import FAKE_API_KEY, error
from tests.support.processes import manage, process_env

pytestmark = pytest.mark.django_db(transaction=True)


def test_retry_content_as_a_real_process(alice, make_roadmap, fake_openai):
    make_roadmap(alice, concepts=2)
    env = process_env(
        GENERATION_PROVIDER="openai",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY=FAKE_API_KEY,
        OPENAI_TIMEOUT_SECONDS=2,
        OPENAI_MAX_RETRIES=0,
        GENERATION_TRANSIENT_ATTEMPTS=1,
    )
    fake_openai.script(error(400))

    def retry_content(*args: str) -> tuple[int, str]:
        command = manage(
            "retry_content", *args, "--content-type", "quiz", "--wait", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out, err = command.communicate(timeout=60)
        return command.returncode, out + err

    code, out = retry_content("--status", "pending")
    assert code == 1 and "1 completed, 1 failed." in out, out

    code, out = retry_content()  # the default selection: what failed
    assert code == 0, out
    assert "1 completed, 0 failed." in out
    assert set(
        ConceptContent.objects.filter(content_type="quiz").values_list("status", flat=True)
    ) == {"completed"}
