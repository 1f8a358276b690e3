"""The reference web client's pages, server side: session login, the
same visibility as the API (someone else's roadmap is a 404), Chinese and
English, and a policy that lets only the site's own scripts run. The page's
behaviour in a browser is tests/system/test_web_client.py."""

import datetime as dt
import json
import re
import secrets

import pytest
from django.test import Client

from generation import services
from notifications.models import Event
from roadmaps.models import ConceptContent, Roadmap, roadmap_topic

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_url(roadmap) -> str:
    return f"/roadmaps/{roadmap.pk}/"


@pytest.mark.parametrize("path", ["/", "/roadmaps/00000000-0000-4000-8000-000000000000/"])
def test_pages_ask_an_anonymous_visitor_to_log_in(path):
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_logging_in_through_the_form_leads_to_the_roadmaps(alice, make_roadmap):
    make_roadmap(alice, title="Alice's plan")
    client = Client()

    response = client.post(
        "/login/", {"username": "alice", "password": "alice-password"}, follow=True
    )

    assert response.redirect_chain == [("/", 302)]
    assert "Alice&#x27;s plan" in response.text


def test_wrong_password_stays_on_the_login_form(alice):
    response = Client().post("/login/", {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert 'role="alert"' in response.text


def unique_address() -> str:
    """Throttle history lives in the shared cache, across tests (as in test_auth)."""
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


def test_failed_form_logins_are_limited_per_address(make_user, settings):
    settings.AUTH_THROTTLE_RATE = "10/minute"
    # Fresh names and addresses: other tests' failures are in the shared cache too.
    carol, dave = [make_user(f"{name}-{secrets.token_hex(4)}") for name in "cd"]
    first, second = unique_address(), unique_address()
    client = Client()

    def log_in(user, password, address):
        return client.post(
            "/login/", {"username": user.username, "password": password}, REMOTE_ADDR=address
        )

    guesses = [log_in(carol, "wrong", first).status_code for _ in range(10)]
    same_address = log_in(dave, f"{dave.username}-password", first)
    elsewhere = log_in(carol, f"{carol.username}-password", second)

    assert guesses == [200] * 10
    assert same_address.status_code == 429  # even with the right password
    assert int(same_address["Retry-After"]) > 0
    assert "Too many login attempts" in same_address.text and 'role="alert"' in same_address.text
    assert "_auth_user_id" not in same_address.wsgi_request.session
    assert same_address["Content-Security-Policy"]
    # The username is not locked out by one address's guesses.
    assert (elsewhere.status_code, elsewhere["Location"]) == (302, "/")


def test_the_list_shows_own_roadmaps_only(alice, bob, make_roadmap):
    make_roadmap(alice, title="Alice's plan")
    make_roadmap(bob, title="Bob's plan")

    text = signed_in(alice).get("/").text

    assert "Alice&#x27;s plan" in text and "Bob&#x27;s plan" not in text


def test_someone_elses_roadmap_answers_404(alice, bob, make_roadmap):
    roadmap = make_roadmap(bob)

    assert signed_in(alice).get(page_url(roadmap)).status_code == 404


def test_staff_see_every_roadmap(alice, make_user, make_roadmap):
    roadmap = make_roadmap(alice, title="Alice's plan")
    staff = make_user("operator", is_staff=True)

    assert signed_in(staff).get(page_url(roadmap)).status_code == 200


def test_the_page_shows_three_badges_per_concept_with_the_status_as_text(alice, make_roadmap):
    roadmap = make_roadmap(alice, concepts=2)
    quiz = ConceptContent.objects.get(
        roadmap=roadmap, concept__concept_id="c002", content_type="quiz"
    )
    services.reset_status(content=quiz, status="failed")

    response = signed_in(alice).get(page_url(roadmap))

    text = response.text
    assert text.count('class="badge"') == 6
    assert 'data-type="quiz" data-status="failed"' in text
    assert "Quiz: Failed" in text and "Tutorial: Pending" in text
    assert text.count('class="retry"') == 6  # nothing is generating: every badge has one
    config = client_config(response)
    assert config["wsPath"] == f"/api/v1/ws/roadmaps/{roadmap.pk}"


def client_config(response) -> dict:
    return json.loads(
        response.text.split('id="client-config" type="application/json">')[1].split("<")[0]
    )


def test_the_page_streams_from_the_newest_event_not_the_whole_history(alice, make_roadmap):
    roadmap = make_roadmap(alice, concepts=3)
    for content in ConceptContent.objects.filter(roadmap=roadmap):
        services.reset_status(content=content, status="failed")
    newest = Event.objects.filter(topic=roadmap_topic(roadmap.pk)).latest("id").pk
    make_roadmap(alice)  # another roadmap's events are not this page's cursor
    for content in ConceptContent.objects.exclude(roadmap=roadmap):
        services.reset_status(content=content, status="failed")

    config = client_config(signed_in(alice).get(page_url(roadmap)))

    assert Event.objects.filter(topic=roadmap_topic(roadmap.pk)).count() == 9
    assert config["cursor"] == newest


def test_a_roadmap_without_events_streams_from_the_start(alice, make_roadmap):
    roadmap = make_roadmap(alice)

    assert client_config(signed_in(alice).get(page_url(roadmap)))["cursor"] == 0


@pytest.mark.parametrize(("age_days", "read_days"), [(3, 4), (365, 366), (500, 366)])
def test_the_usage_line_reads_the_roadmaps_life_in_one_report(
    age_days, read_days, alice, make_roadmap
):
    """From the roadmap's first UTC day to today, or the longest period GET
    /usage/ covers when it is older: the script's read is never refused."""
    roadmap = make_roadmap(alice)
    now = dt.datetime.now(dt.UTC)
    Roadmap.objects.filter(pk=roadmap.pk).update(created_at=now - dt.timedelta(days=age_days))
    client = signed_in(alice)

    since = client_config(client.get(page_url(roadmap)))["usageSince"]
    answer = client.get("/api/v1/usage/", {"group_by": "roadmap", "since": since})

    assert answer.status_code == 200, answer.content
    report = answer.json()
    assert report["until"] == now.date().isoformat()
    read = dt.date.fromisoformat(report["until"]) - dt.date.fromisoformat(report["since"])
    assert read.days + 1 == read_days


def test_a_generating_badge_has_no_retry_button(alice, make_roadmap, no_runner):
    roadmap = make_roadmap(alice)
    tutorial = ConceptContent.objects.get(roadmap=roadmap, content_type="tutorial")
    services.retry_content(content=tutorial, user=alice)

    text = signed_in(alice).get(page_url(roadmap)).text

    assert 'data-type="tutorial" data-status="generating"' in text
    assert text.count('class="retry" hidden') == 1


def test_the_page_renders_in_chinese(alice, make_roadmap):
    roadmap = make_roadmap(alice)
    client = signed_in(alice)
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})

    response = client.get(page_url(roadmap))

    text = response.text
    assert '<html lang="zh-hans">' in text
    assert "教程：待生成" in text and "重试全部失败项" in text
    assert response.context["client"]["strings"]["statuses"]["failed"] == "失败"
    assert response.context["client"]["strings"]["noLimit"] == "无每日限额"


def test_the_page_is_english_by_default(alice, make_roadmap):
    text = signed_in(alice).get(page_url(make_roadmap(alice))).text

    assert '<html lang="en">' in text and "Retry all failed" in text


@pytest.mark.parametrize("path", ["page", "/", "/login/"])
def test_pages_allow_only_the_sites_own_scripts_and_images(path, alice, make_roadmap):
    client = Client() if path == "/login/" else signed_in(alice)
    response = client.get(page_url(make_roadmap(alice)) if path == "page" else path)

    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "object-src 'none'" in policy
    assert "img-src 'self' data:;" in policy  # no remote images (model Markdown)
    # Every script, stylesheet and link is the site's own or inline data: a search for
    # "cdn" failed once on a CSRF token that happened to contain it.
    addresses = re.findall(r'(?:src|href)="([^"]*)"', response.text)
    assert addresses, "the page links nothing; the check below would hold vacuously"
    assert [a for a in addresses if not a.startswith(("/", "#", "?", "data:"))] == []


def test_model_text_in_names_is_escaped_by_the_page(alice, make_roadmap):
    framework = {
        "stages": [
            {
                "name": "<script>alert(1)</script>",
                "modules": [{"name": "M", "concepts": [{"concept_id": "c1", "name": "<b>x</b>"}]}],
            }
        ]
    }
    roadmap = make_roadmap(alice, framework=framework)

    text = signed_in(alice).get(page_url(roadmap)).text

    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text
    assert "<b>x</b>" not in text
