"""The reference web client in a real browser: headless Chromium
(Debian's `chromium` and `chromium-driver`, through selenium) against a real
daphne on this test's database, the way a person uses it: log in through the
form, click, watch the badges change without reloading, watch a tutorial being
written (across a reload), survive a server restart, and never run a script that
came from a model.

The browser may reach 127.0.0.1 only (every other host name is unresolvable),
so the page also proves it loads nothing from a CDN.

Marked `browser`: deselected by default, run once in CI (.ci/run) beside the
fuzz. WEB_CLIENT_SCREENSHOT=path saves the roadmap page mid-batch (mixed
statuses) to that path: how docs/web-client.png is made; LIVE_TUTORIAL_SCREENSHOT=path
saves a tutorial's viewer mid-stream: how docs/images/live-tutorial.png is made."""

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from django.core.management import call_command
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from generation import engine, services
from generation.models import UserBudget
from notifications.models import Event, EventCounter
from roadmaps.models import ConceptContent
from tests.conftest import require_service
from tests.support.daphne_server import DaphneServer, daphne_server
from tests.support.fake_openai import ok
from tests.support.lifecycle import wait_until
from tests.support.ports import free_port

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LABELS = {"pending": "Pending", "generating": "Generating", "completed": "Completed"}
LABELS["failed"] = "Failed"
TYPE_LABELS = {"tutorial": "Tutorial", "resources": "Resources", "quiz": "Quiz"}

MALICIOUS_TUTORIAL = (
    "# Rendering safely\n\n"
    "This tutorial tries to run code in the reader's browser.\n\n"
    "<script>window.__pwned = 1</script>\n\n"
    'An image: <img src=x onerror="window.__pwned = 2">\n\n'
    "[a harmless-looking link](javascript:window.__pwned=3)\n\n"
    "![a tracking pixel](https://tracker.example/pixel.png)\n\n"
    "```html\n<script>window.__pwned = 4</script>\n```\n"
)

HOSTILE = "<img src=x onerror=window.__pwned=1> <script>window.__pwned=2</script>"
RESOURCES_WITH_A_JAVASCRIPT_URL = {
    "items": [
        {
            "title": "Click me",
            "url": "javascript:window.__pwned=3",
            "type": "article",
            "description": "A link that runs code.",
            "estimated_minutes": 5,
        }
    ]
}
HOSTILE_RESOURCES = {
    "items": [
        {
            "title": f"Title {HOSTILE}",
            "url": "https://example.com/docs?q=<script>",
            "type": "article",
            "description": f"Description {HOSTILE}",
            "estimated_minutes": 5,
        }
    ]
}
HOSTILE_QUIZ = {
    "questions": [
        {
            "question_id": "q1",
            "type": "single_choice",
            "question": f"Question {HOSTILE}",
            "options": [f"Option {HOSTILE}", "<b>not bold</b>"],
            "correct_answers": [0],
            "explanation": f"Because {HOSTILE}",
            "difficulty": "easy",
        }
    ]
}

REACT_FRAMEWORK = {
    "stages": [
        {
            "name": "Foundations",
            "modules": [
                {
                    "name": "Components",
                    "concepts": [
                        {"concept_id": "jsx", "name": "JSX", "description": "Markup in JS"},
                        {"concept_id": "props", "name": "Props and state"},
                    ],
                },
                {
                    "name": "Hooks",
                    "concepts": [
                        {"concept_id": "use-state", "name": "useState"},
                        {"concept_id": "use-effect", "name": "useEffect"},
                    ],
                },
            ],
        }
    ]
}


def browser_binaries() -> None:
    found = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
    require_service(
        "Chromium",
        found,
        f"needs {CHROMIUM} and {CHROMEDRIVER} (apt install chromium chromium-driver)",
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[WebDriver]:
    browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    # A fixed driver: selenium-manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def server_env(settings, **overrides) -> dict[str, str]:
    return {
        "GENERATION_PROVIDER": "offline",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "RETRY_THROTTLE_RATE": "10000/minute",
        "AUTH_THROTTLE_RATE": "10000/minute",
        "AUTH_USERNAME_THROTTLE_RATE": "10000/minute",
        "LOG_LEVEL": "WARNING",
        **{key: str(value) for key, value in overrides.items()},
    }


def wait(driver: WebDriver, condition, timeout: float = 15.0, message: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: condition(d), message
    )


def log_in(driver: WebDriver, server: DaphneServer, user) -> None:
    driver.delete_all_cookies()
    driver.get(f"{server.http_url}/")
    wait(driver, lambda d: "/login/" in d.current_url)
    driver.find_element(By.ID, "id_username").send_keys(user.username)
    driver.find_element(By.ID, "id_password").send_keys(f"{user.username}-password")
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "ul.roadmaps"))


def open_roadmap(driver: WebDriver, roadmap) -> None:
    driver.find_element(By.CSS_SELECTOR, f'a[href="/roadmaps/{roadmap.pk}/"]').click()
    wait_connected(driver)
    driver.execute_script("window.__sameDocument = true;")  # gone if the page reloads


def wait_connected(driver: WebDriver, timeout: float = 15.0) -> None:
    wait(
        driver,
        lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "connected",
        timeout,
        "the page never connected to the roadmap stream",
    )


def badge(driver: WebDriver, concept_id: str, content_type: str):
    return driver.find_element(
        By.CSS_SELECTOR, f'.concept[data-concept="{concept_id}"] .badge[data-type="{content_type}"]'
    )


def badge_text(content_type: str, status: str) -> str:
    return f"{TYPE_LABELS[content_type]}: {LABELS[status]}"


def page_statuses(driver: WebDriver) -> dict[tuple[str, str], tuple[str, str]]:
    rows = driver.execute_script(
        "return [...document.querySelectorAll('.badge')].map(b => ["
        "b.closest('.concept').dataset.concept, b.dataset.type, b.dataset.status,"
        "b.querySelector('.badge-text').textContent])"
    )
    return {(c, t): (s, text) for c, t, s, text in rows}


def database_statuses(roadmap) -> dict[tuple[str, str], tuple[str, str]]:
    rows = ConceptContent.objects.filter(roadmap=roadmap).values_list(
        "concept__concept_id", "content_type", "status"
    )
    return {(c, t): (s, badge_text(t, s)) for c, t, s in rows}


def test_retry_shows_generating_at_once_then_completed_without_a_reload(
    browser, alice, make_roadmap, settings, tmp_path
):
    roadmap = make_roadmap(alice, concepts=2)
    tutorial = ConceptContent.objects.get(
        roadmap=roadmap, concept__concept_id="c001", content_type="tutorial"
    )
    services.reset_status(content=tutorial, status="failed")

    env = server_env(settings, OFFLINE_PROVIDER_DELAY_SECONDS=3)
    with daphne_server(tmp_path, **env) as server:
        log_in(browser, server, alice)
        open_roadmap(browser, roadmap)
        failed = badge(browser, "c001", "tutorial")
        assert failed.get_attribute("data-status") == "failed"
        assert failed.find_element(By.CSS_SELECTOR, ".badge-text").text == "Tutorial: Failed"

        failed.find_element(By.CSS_SELECTOR, "button.retry").send_keys(Keys.ENTER)  # keyboard

        wait(browser, lambda _: failed.get_attribute("data-status") == "generating", 2)
        assert failed.find_element(By.CSS_SELECTOR, ".badge-text").text == "Tutorial: Generating"
        assert not failed.find_element(By.CSS_SELECTOR, "button.retry").is_displayed()
        tutorial.refresh_from_db()
        assert tutorial.status == "generating"  # shown before the generation ended
        progress = failed.find_element(By.CSS_SELECTOR, "progress")
        wait(browser, lambda _: progress.is_displayed(), 5, "no progress bar while generating")
        assert 0 < int(progress.get_attribute("value")) <= 100

        wait(browser, lambda _: failed.get_attribute("data-status") == "completed", 20)
        assert failed.find_element(By.CSS_SELECTOR, ".badge-text").text == "Tutorial: Completed"
        assert not progress.is_displayed()
        assert browser.execute_script("return window.__sameDocument") is True
        tutorial.refresh_from_db()
        assert tutorial.status == "completed"


def test_a_batch_started_elsewhere_shows_its_pairs_generating_before_they_start(
    browser, alice, make_roadmap, settings, tmp_path
):
    """Another tab (here: a token client) starts a batch: its pairs are `generating`
    in the database at once, but the stream names each only when it starts. The
    page reads the roadmap when a task it did not know shows up."""
    roadmap = make_roadmap(alice, concepts=3)
    for content in ConceptContent.objects.filter(roadmap=roadmap, content_type="tutorial"):
        services.reset_status(content=content, status="failed")
    # One pair at a time, 3 s each: the last pair starts 6 s after the first.
    env = server_env(settings, OFFLINE_PROVIDER_DELAY_SECONDS=3, GENERATION_CONCURRENCY=1)

    with daphne_server(tmp_path, **env) as server:
        log_in(browser, server, alice)
        open_roadmap(browser, roadmap)
        answer = httpx.post(
            f"{server.http_url}/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch",
            json={"content_types": ["tutorial"]},
            headers={"Authorization": f"Token {alice.token}"},
        )
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["data"]["task_id"]

        tutorials = [badge(browser, f"c00{n}", "tutorial") for n in (1, 2, 3)]
        wait(
            browser,
            lambda _: all(b.get_attribute("data-status") == "generating" for b in tutorials),
            3,
            "the page showed the batch's pairs only as each started",
        )
        started = Event.objects.filter(stream=task_id, type="concept_start").count()
        assert started < 3  # the page did not wait for every pair's own event
        retries = [b.find_element(By.CSS_SELECTOR, "button.retry") for b in tutorials]
        assert not any(retry.is_displayed() for retry in retries)


def test_page_reconnects_after_a_server_restart_and_ends_on_the_true_statuses(
    browser, alice, make_roadmap, settings, tmp_path
):
    roadmap = make_roadmap(alice, framework=REACT_FRAMEWORK, title="Learn React")
    quiz = ConceptContent.objects.get(
        roadmap=roadmap, concept__concept_id="use-effect", content_type="quiz"
    )
    services.reset_status(content=quiz, status="failed")  # one already failed: stays so
    port = free_port()
    # Two provider slots, so the batch takes a while; a short lease, so what the
    # restart interrupts is failed by the new server's sweep within seconds.
    env = server_env(
        settings,
        OFFLINE_PROVIDER_DELAY_SECONDS=1.5,
        GENERATION_CONCURRENCY=2,
        GENERATION_LEASE_SECONDS=2,
    )

    with daphne_server(tmp_path, port=port, **env) as server:
        log_in(browser, server, alice)
        open_roadmap(browser, roadmap)
        browser.find_element(By.ID, "generate-all").click()
        wait(
            browser,
            lambda _: (
                "completed" in {s for s, _ in page_statuses(browser).values()}
                and any(
                    s == "generating" and "Generating" in text
                    for s, text in page_statuses(browser).values()
                )
            ),
            20,
            "the batch never completed a pair",
        )
        if os.environ.get("WEB_CLIENT_SCREENSHOT"):
            wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "progress:not([hidden])"), 5)
            browser.set_window_size(1280, 1250)  # the whole roadmap
            browser.save_screenshot(os.environ["WEB_CLIENT_SCREENSHOT"])
            browser.set_window_size(1280, 900)
    assert ConceptContent.objects.filter(roadmap=roadmap, status="generating").exists()
    wait(
        browser,
        lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "reconnecting",
        10,
        "the page did not notice the server going away",
    )

    with daphne_server(tmp_path, port=port, **env):
        wait_connected(browser, 20)
        # Settled: the new server's sweep failed what the restart interrupted.
        wait_until(
            lambda: (
                not ConceptContent.objects.filter(roadmap=roadmap, status="generating").exists()
            ),
            timeout=20,
        )
        truth = database_statuses(roadmap)
        assert "generating" not in {s for s, _ in truth.values()}
        wait(
            browser,
            lambda _: page_statuses(browser) == truth,
            15,
            "the page does not show the database's statuses",
        )
    assert browser.execute_script("return window.__sameDocument") is True
    final = {s for s, _ in truth.values()}
    assert {"completed", "failed"} <= final, truth


# Keeps every WebSocket the page opens, with its close code, in window.__sockets.
SOCKET_RECORDER = """
window.__sockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = new NativeWebSocket(url, protocols);
  const entry = { url: String(url), code: null, reason: null };
  window.__sockets.push(entry);
  ws.addEventListener("close", (close) => {
    entry.code = close.code;
    entry.reason = close.reason;
  });
  return ws;
};
window.WebSocket.prototype = NativeWebSocket.prototype;
"""


@contextmanager
def sockets_recorded(driver: WebDriver) -> Iterator[None]:
    """Pages loaded meanwhile record their sockets (window.__sockets)."""
    script = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": SOCKET_RECORDER}
    )
    try:
        yield
    finally:
        driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )


def page_sockets(driver: WebDriver) -> list[dict]:
    return driver.execute_script("return window.__sockets")


def test_page_told_its_events_were_pruned_reads_the_state_and_resumes_from_the_mark(
    browser, alice, make_roadmap, settings, tmp_path
):
    """While the page is away, statuses change and their events are pruned: its
    reconnect from the old cursor is refused 4410 with the mark to resume from.
    The page reads the roadmap over REST, resumes from that mark (not from its
    old cursor again), shows the database's statuses, and gets the next event live."""
    roadmap = make_roadmap(alice, concepts=2)
    first_tutorial, first_quiz, second_quiz = (
        ConceptContent.objects.get(roadmap=roadmap, concept__concept_id=c, content_type=t)
        for c, t in (("c001", "tutorial"), ("c001", "quiz"), ("c002", "quiz"))
    )
    services.reset_status(content=first_tutorial, status="failed")  # the page's cursor
    port = free_port()
    env = server_env(settings, NOTIFICATIONS_CATCH_UP_SECONDS=0.5)

    with sockets_recorded(browser):
        with daphne_server(tmp_path, port=port, **env) as server:
            log_in(browser, server, alice)
            open_roadmap(browser, roadmap)
        cursor = Event.objects.get(topic=f"roadmap-{roadmap.pk}").pk
        assert page_sockets(browser)[-1]["url"].endswith(f"?after={cursor}")
        wait(
            browser,
            lambda d: (
                d.find_element(By.ID, "connection").get_attribute("data-state") == "reconnecting"
            ),
            10,
            "the page did not notice the server going away",
        )
        services.reset_status(content=first_tutorial, status="pending")
        services.reset_status(content=second_quiz, status="failed")
        call_command("prune_events", "--older-than", "0", stdout=io.StringIO())
        mark = EventCounter.objects.get(key=f"roadmap-{roadmap.pk}").pruned_through
        assert mark > cursor and not Event.objects.filter(pk__gt=cursor).exists()

        with daphne_server(tmp_path, port=port, **env):
            wait(
                browser,
                lambda _: any(s["url"].endswith(f"?after={mark}") for s in page_sockets(browser)),
                20,
                f"the page did not resume from the pruned mark (after={mark})",
            )
            wait_connected(browser)
            truth = database_statuses(roadmap)
            wait(browser, lambda _: page_statuses(browser) == truth, 10, "statuses not read")
            # Live from the mark: the next change comes through the resumed socket.
            services.reset_status(content=first_quiz, status="failed")
            wait(
                browser,
                lambda _: badge(browser, "c001", "quiz").get_attribute("data-status") == "failed",
                10,
                "the resumed socket did not deliver the next event",
            )
            sockets = page_sockets(browser)

    refused = [s for s in sockets if s["code"] == 4410]
    assert [s["reason"] for s in refused] == [f"pruned; resume with after={mark}"], sockets
    assert sockets[-1] == {"url": sockets[-1]["url"], "code": None, "reason": None}
    assert sockets[-1]["url"].endswith(f"?after={mark}")
    assert sockets.index(refused[0]) == len(sockets) - 2  # refused, then resumed at once
    assert browser.execute_script("return window.__sameDocument") is True


def test_a_tutorial_with_script_in_its_markdown_is_shown_as_text(
    browser, alice, make_roadmap, settings, tmp_path, fake_openai
):
    roadmap = make_roadmap(alice)
    tutorial = ConceptContent.objects.get(roadmap=roadmap, content_type="tutorial")
    fake_openai.script(ok(MALICIOUS_TUTORIAL))
    services.retry_content(content=tutorial, user=alice)
    assert engine.wait_until_idle(30)
    tutorial.refresh_from_db()
    assert tutorial.status == "completed", tutorial.public_error

    with daphne_server(tmp_path, **server_env(settings)) as server:
        log_in(browser, server, alice)
        open_roadmap(browser, roadmap)
        badge(browser, "c001", "tutorial").find_element(By.CSS_SELECTOR, "button.view").click()
        viewer = browser.find_element(By.ID, "viewer")
        wait(browser, lambda _: viewer.get_attribute("data-state") == "ready")
        body = browser.find_element(By.ID, "viewer-body")
        wait(browser, lambda _: "Rendering safely" in body.text)

        text = body.text
        assert "<script>window.__pwned = 1</script>" in text
        assert '<img src=x onerror="window.__pwned = 2">' in text
        assert "<script>window.__pwned = 4</script>" in text  # the code block, as code
        assert browser.execute_script("return typeof window.__pwned") == "undefined"
        inside = browser.execute_script(
            "const b = document.getElementById('viewer-body');"
            "return {scripts: b.querySelectorAll('script').length,"
            " images: b.querySelectorAll('img').length,"
            " handlers: b.querySelectorAll('[onerror],[onclick],[onload]').length,"
            " hrefs: [...b.querySelectorAll('a')].map(a => a.getAttribute('href'))}"
        )
        assert inside["scripts"] == 0 and inside["images"] == 0 and inside["handlers"] == 0
        assert not any(href and href.lower().startswith("javascript:") for href in inside["hrefs"])
        # The Markdown image is a link to it, never fetched.
        assert "https://tracker.example/pixel.png" in inside["hrefs"]
        fetched = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert not [url for url in fetched if "tracker.example" in url], fetched
        heading = body.find_element(By.CSS_SELECTOR, "h1")
        assert heading.text == "Rendering safely"  # the Markdown itself is rendered

        link = body.find_element(By.LINK_TEXT, "a harmless-looking link")
        link.click()  # nothing to run, whatever the browser does with it
        assert browser.execute_script("return typeof window.__pwned") == "undefined"
        browser.find_element(By.ID, "viewer-close").click()
        wait(browser, lambda _: not viewer.is_displayed())


def viewer_contents(driver: WebDriver) -> dict:
    return driver.execute_script(
        "const b = document.getElementById('viewer-body');"
        "return {text: b.innerText,"
        " elements: b.querySelectorAll('script, img, [onerror], [onclick], [onload]').length,"
        " hrefs: [...b.querySelectorAll('a')].map(a => a.getAttribute('href')),"
        " rels: [...b.querySelectorAll('a')].map(a => a.getAttribute('rel')),"
        " pwned: typeof window.__pwned}"
    )


def test_resources_and_quiz_viewers_show_model_text_as_text_with_http_links_only(
    browser, alice, make_roadmap, settings, tmp_path, fake_openai
):
    """Resources and quiz viewers: model text through textContent, links http(s) only."""
    roadmap = make_roadmap(alice)
    resources, quiz = (
        ConceptContent.objects.get(roadmap=roadmap, content_type=content_type)
        for content_type in ("resources", "quiz")
    )
    # A javascript: URL fails the output's validation (HttpUrl): the second answer is kept.
    fake_openai.script(ok(RESOURCES_WITH_A_JAVASCRIPT_URL), ok(HOSTILE_RESOURCES))
    services.retry_content(content=resources, user=alice)
    assert engine.wait_until_idle(30)
    fake_openai.script(ok(HOSTILE_QUIZ))
    services.retry_content(content=quiz, user=alice)
    assert engine.wait_until_idle(30)
    assert fake_openai.unused_script == 0
    for content in (resources, quiz):
        content.refresh_from_db()
        assert content.status == "completed", content.public_error

    with daphne_server(tmp_path, **server_env(settings)) as server:
        log_in(browser, server, alice)
        open_roadmap(browser, roadmap)
        viewer = browser.find_element(By.ID, "viewer")

        badge(browser, "c001", "resources").find_element(By.CSS_SELECTOR, "button.view").click()
        wait(browser, lambda _: viewer.get_attribute("data-state") == "ready")
        shown = viewer_contents(browser)
        assert f"Title {HOSTILE}" in shown["text"] and f"Description {HOSTILE}" in shown["text"]
        assert shown["hrefs"] and all(href.startswith("https://") for href in shown["hrefs"])
        assert shown["rels"] == ["noopener noreferrer"] * len(shown["hrefs"])
        assert (shown["elements"], shown["pwned"]) == (0, "undefined")
        browser.find_element(By.ID, "viewer-close").click()

        badge(browser, "c001", "quiz").find_element(By.CSS_SELECTOR, "button.view").click()
        wait(browser, lambda _: viewer.get_attribute("data-state") == "ready")
        shown = viewer_contents(browser)
        for text in (f"Question {HOSTILE}", f"Option {HOSTILE}", "<b>not bold</b>"):
            assert text in shown["text"]
        assert (shown["elements"], shown["pwned"]) == (0, "undefined")
        browser.find_element(By.CSS_SELECTOR, "#viewer-body details summary").click()
        assert f"Because {HOSTILE}" in viewer_contents(browser)["text"]
        assert browser.execute_script("return typeof window.__pwned") == "undefined"
        browser.find_element(By.ID, "viewer-close").click()

        badge(browser, "c001", "tutorial").find_element(By.CSS_SELECTOR, "button.view").click()
        wait(browser, lambda _: viewer.get_attribute("data-state") == "ready")
        assert "Nothing generated yet (status: Pending)" in viewer.text


def test_no_browser_binary_fails_in_ci_instead_of_skipping(monkeypatch):
    """The skip above is the project's require_service: a failure under CI=true."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    with pytest.raises(pytest.fail.Exception):
        browser_binaries()


# What a page loaded meanwhile reads and draws while a draft is written:
# window.__draftReads counts its GET …/draft, window.__live keeps the stream's
# live events, window.__liveOffsets every length the viewer showed, and
# window.__lastLive the viewer's last live drawing (before the stored content
# replaced it).
LIVE_RECORDER = """
window.__draftReads = 0;
window.__live = [];
window.__liveOffsets = [];
window.__lastLive = null;
const nativeFetch = window.fetch;
window.fetch = function (resource, init) {
  if (String(resource).endsWith("/draft")) window.__draftReads += 1;
  return nativeFetch.call(this, resource, init);
};
const NativeSocket = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = new NativeSocket(url, protocols);
  ws.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "content_snapshot" || event.type === "content_delta") {
      window.__live.push(event);
    }
  });
  return ws;
};
window.WebSocket.prototype = NativeSocket.prototype;
new MutationObserver(() => {
  const live = document.querySelector("#viewer-body > [data-live]");
  if (!live) return;
  const offset = Number(live.dataset.offset);
  if (window.__liveOffsets.at(-1) !== offset) window.__liveOffsets.push(offset);
  window.__lastLive = {offset: offset, html: live.innerHTML};
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


@contextmanager
def live_recorded(driver: WebDriver) -> Iterator[None]:
    """Pages loaded meanwhile record their draft reads and drawings (LIVE_RECORDER)."""
    script = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": LIVE_RECORDER}
    )
    try:
        yield
    finally:
        driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )


def recorded(driver: WebDriver, name: str):
    return driver.execute_script(f"return window.{name}")


def live_offset(driver: WebDriver) -> int | None:
    """The length (code points) the viewer shows of a draft; None when not live."""
    offsets = recorded(driver, "__liveOffsets")
    return offsets[-1] if offsets else None


def start_and_view(driver: WebDriver, concept_id: str, content_type: str):
    pair = badge(driver, concept_id, content_type)
    pair.find_element(By.CSS_SELECTOR, "button.retry").click()
    wait(driver, lambda _: pair.get_attribute("data-status") == "generating", 5)
    pair.find_element(By.CSS_SELECTOR, "button.view").click()
    return pair


def stored_tutorial(server: DaphneServer, user, roadmap, concept_id: str) -> dict:
    answer = httpx.get(
        f"{server.http_url}/api/v1/roadmaps/{roadmap.pk}/concepts/{concept_id}/tutorial",
        headers={"Authorization": f"Token {user.token}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_stored_tutorial_shown(driver: WebDriver, pair) -> str:
    """Waits for the completed tutorial in the viewer; its rendered HTML."""
    viewer = driver.find_element(By.ID, "viewer")
    wait(driver, lambda _: pair.get_attribute("data-status") == "completed", 30)
    wait(driver, lambda _: viewer.get_attribute("data-state") == "ready", 10)
    article = driver.find_element(By.CSS_SELECTOR, "#viewer-body > article.tutorial")
    assert article.get_attribute("data-live") is None  # the stored one
    assert not driver.find_elements(By.CSS_SELECTOR, "#viewer-body .writing")
    return article.get_attribute("innerHTML")


def test_a_tutorial_is_shown_as_it_is_written_and_continues_after_a_reload(
    browser, alice, make_roadmap, settings, tmp_path
):
    """The viewer of a generating tutorial shows its Markdown growing, with a
    writing note. A reload mid-stream starts from the text so far (the draft),
    not from nothing, and goes on from there: the last live drawing is the stored
    tutorial, rendered the same way, neither short of it nor repeating any of it."""
    roadmap = make_roadmap(alice)
    env = server_env(settings, OFFLINE_PROVIDER_DELAY_SECONDS=8)

    with live_recorded(browser), daphne_server(tmp_path, **env) as server:
        log_in(browser, server, alice)
        open_roadmap(browser, roadmap)
        pair = start_and_view(browser, "c001", "tutorial")
        viewer = browser.find_element(By.ID, "viewer")

        wait(browser, lambda d: (live_offset(d) or 0) > 0, 10, "no live text appeared")
        first = live_offset(browser)
        wait(browser, lambda d: live_offset(d) > first, 10, "the live text did not grow")
        assert viewer.get_attribute("data-state") == "live"
        assert browser.find_element(By.CSS_SELECTOR, "#viewer-body .writing").text == "Writing…"
        heading = "#viewer-body > [data-live] h1"  # Markdown, rendered as it grows
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, heading), 10, "no heading")
        assert browser.find_element(By.CSS_SELECTOR, heading).text.startswith("Concept 1")
        assert pair.get_attribute("data-status") == "generating"
        if os.environ.get("LIVE_TUTORIAL_SCREENSHOT"):  # once there is more to see
            wait(browser, lambda d: "a step towards" in d.find_element(By.ID, "viewer-body").text)
            browser.save_screenshot(os.environ["LIVE_TUTORIAL_SCREENSHOT"])
        before = live_offset(browser)
        offsets = recorded(browser, "__liveOffsets")
        assert offsets == sorted(offsets) and len(offsets) >= 2, offsets

        browser.refresh()
        wait_connected(browser)
        pair = badge(browser, "c001", "tutorial")
        assert pair.get_attribute("data-status") == "generating"  # still being written
        pair.find_element(By.CSS_SELECTOR, "button.view").click()
        stored_html = wait_stored_tutorial_shown(browser, pair)
        tutorial = stored_tutorial(server, alice, roadmap, "c001")

    after = recorded(browser, "__liveOffsets")
    assert after[0] >= before, (before, after)  # went on from the text so far
    assert after == sorted(after) and len(after) >= 2, after  # and grew from there
    last = recorded(browser, "__lastLive")
    assert last["offset"] == len(tutorial["markdown"])
    assert last["html"] == stored_html
    assert "Concept 1: a first tutorial" in stored_html


def test_a_chinese_tutorial_with_an_emoji_is_followed_by_code_point_offsets(
    browser, alice, make_roadmap, settings, tmp_path
):
    """Offsets count code points, as Python does: after the emoji (two UTF-16
    units, one code point) every delta still follows on, with no re-read."""
    name = "React Hooks 基础 🚀"
    framework = {
        "stages": [
            {
                "name": "基础",
                "modules": [{"name": "Hooks", "concepts": [{"concept_id": "hooks", "name": name}]}],
            }
        ]
    }
    roadmap = make_roadmap(alice, framework=framework, preferences={"language": "zh-CN"})
    env = server_env(settings, OFFLINE_PROVIDER_DELAY_SECONDS=4)

    with live_recorded(browser), daphne_server(tmp_path, **env) as server:
        log_in(browser, server, alice)
        open_roadmap(browser, roadmap)
        pair = start_and_view(browser, "hooks", "tutorial")
        stored_html = wait_stored_tutorial_shown(browser, pair)
        tutorial = stored_tutorial(server, alice, roadmap, "hooks")

    markdown = tutorial["markdown"]
    assert f"# {name}：入门教程" in markdown
    after_emoji = markdown.index("🚀") + 1
    deltas = [
        event
        for event in recorded(browser, "__live")
        if event["type"] == "content_delta" and event["offset"] >= after_emoji
    ]
    assert len(deltas) >= 2, recorded(browser, "__live")
    assert recorded(browser, "__draftReads") == 1  # the viewer's opening read only
    last = recorded(browser, "__lastLive")
    assert last["offset"] == len(markdown)
    assert last["html"] == stored_html
    assert "入门教程" in stored_html


def usage_line(driver: WebDriver) -> dict:
    return driver.execute_script(
        "const r = document.getElementById('usage-roadmap'),"
        " b = document.getElementById('usage-budget');"
        "return {state: document.getElementById('usage').dataset.state,"
        " tokens: r.dataset.tokens, roadmap: r.textContent,"
        " remaining: b.dataset.remaining ?? null, budget: b.textContent};"
    )


def usage_report(server: DaphneServer, user, roadmap) -> dict:
    answer = httpx.get(
        f"{server.http_url}/api/v1/usage/",
        params={"group_by": "roadmap", "since": roadmap.created_at.date().isoformat()},
        headers={"Authorization": f"Token {user.token}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_usage_line_follows_the_roadmaps_generations_and_the_days_budget(
    browser, alice, make_roadmap, settings, tmp_path
):
    """The line shows what this roadmap's generations used and what is left of
    today's budget, as GET /usage/ says, and reads them again when a pair of the
    roadmap ends, without a reload."""
    roadmap = make_roadmap(alice, concepts=2)
    make_roadmap(alice)  # another roadmap's usage is not this one's
    env = server_env(settings, OFFLINE_PROVIDER_DELAY_SECONDS=1)

    with daphne_server(tmp_path, **env) as server:
        log_in(browser, server, alice)
        open_roadmap(browser, roadmap)
        wait(browser, lambda d: usage_line(d)["state"] == "ready", 10, "no usage line")
        assert usage_line(browser)["tokens"] == "0"
        assert usage_line(browser)["budget"] == "No daily limit"

        tutorial = badge(browser, "c001", "tutorial")
        tutorial.find_element(By.CSS_SELECTOR, "button.retry").click()
        wait(browser, lambda _: tutorial.get_attribute("data-status") == "completed", 20)
        wait(browser, lambda d: usage_line(d)["tokens"] != "0", 10, "tokens never shown")
        report = usage_report(server, alice, roadmap)
        (figures,) = [g for g in report["groups"] if g["key"] == str(roadmap.pk)]
        tokens = figures["prompt_tokens"] + figures["completion_tokens"]
        assert tokens > 0 and figures["cost"] is None  # the offline model has no price
        line = usage_line(browser)
        assert line["tokens"] == str(tokens)
        assert line["roadmap"] == f"This roadmap: {tokens:,} tokens, not priced"
        assert line["budget"] == "No daily limit" and line["remaining"] is None

        UserBudget.objects.create(user=alice, daily_tokens=5_000_000)
        quiz = badge(browser, "c002", "quiz")
        quiz.find_element(By.CSS_SELECTOR, "button.retry").click()
        wait(browser, lambda _: quiz.get_attribute("data-status") == "completed", 20)
        report = usage_report(server, alice, roadmap)
        remaining = report["budget"]["remaining"]
        assert 0 < remaining < 5_000_000
        wait(
            browser,
            lambda d: usage_line(d)["remaining"] == str(remaining),
            10,
            f"the line never showed {remaining} tokens left",
        )
        line = usage_line(browser)
        assert line["budget"] == f"{remaining:,} tokens left today (resets 00:00 UTC)"
        (figures,) = [g for g in report["groups"] if g["key"] == str(roadmap.pk)]
        assert int(line["tokens"]) == figures["prompt_tokens"] + figures["completion_tokens"]
        assert int(line["tokens"]) > tokens
        assert browser.execute_script("return window.__sameDocument") is True
