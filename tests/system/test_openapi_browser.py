"""The API docs page in a real browser with the network unreachable: Swagger UI
renders every operation from the project's own static files."""

import re
import shutil
import subprocess

import pytest

from tests.conftest import require_service
from tests.support.daphne_server import daphne_server
from tests.support.openapi import DOCUMENTED_ANSWERS

pytestmark = pytest.mark.django_db(transaction=True)


def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    require_service("Chromium", binary is not None, "no chromium on PATH (apt install chromium)")
    return binary


def test_swagger_ui_renders_the_operations_list_with_the_network_unreachable(tmp_path):
    """A real browser, allowed to reach 127.0.0.1 only: every other host name is
    unresolvable and every other address goes to a dead proxy."""
    browser = chromium()
    with daphne_server(tmp_path) as server:
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9",
                "--proxy-bypass-list=127.0.0.1",
                "--virtual-time-budget=15000",
                "--dump-dom",
                f"{server.http_url}/api/v1/docs/",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', result.stdout))
    assert rendered == {path for _, path in DOCUMENTED_ANSWERS}, result.stderr[-2000:]
