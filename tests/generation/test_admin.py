"""The Django admin (DESIGN §7), through the admin's own HTTP views:
a staff user logs in, posts changelist actions, confirms the destructive ones,
and reads the usage records with the totals of a selection.
Every action goes through generation's services, so it must leave the same
status_changed / task events on the roadmap stream as the API would."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from generation import engine, services
from generation.models import (
    GenerationTask,
    ItemState,
    ProviderCircuit,
    TaskKind,
    TaskStatus,
    UsageRecord,
)
from notifications.models import Event
from roadmaps.models import ConceptContent, ContentStatus, Roadmap, roadmap_topic
from tests.support.usage import DAY, PRICES, at, record, save

# In the test's transaction, rolled back after it: the admin's views run in this
# thread, and nothing but the engine (two tests, marked) reads from another.
pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/roadmaps/conceptcontent/"


@pytest.fixture
def queue_without_worker(settings):
    """Work is committed as `generating` and stays there: nothing consumes the queue."""
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}


def content_of(roadmap, concept_id: str, content_type: str) -> ConceptContent:
    return ConceptContent.objects.select_related("concept", "roadmap").get(
        roadmap=roadmap, concept__concept_id=concept_id, content_type=content_type
    )


def status_events(roadmap, after_id: int = 0) -> list[dict]:
    return [
        event.body
        for event in Event.objects.filter(
            topic=roadmap_topic(roadmap.pk), type="status_changed", id__gt=after_id
        ).order_by("id")
    ]


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def post_action(client: Client, action: str, contents, *, confirm: bool = False, **extra):
    data = {"action": action, ACTION_CHECKBOX_NAME: [c.pk for c in contents], **extra}
    if confirm:
        data["post"] = "yes"
    return client.post(CHANGELIST, data)


def fail(content: ConceptContent) -> None:
    services.reset_status(content=content, status=ContentStatus.FAILED)


# --- reset_to_pending / mark_failed -------------------------------------------


def test_reset_to_pending_asks_for_confirmation_and_changes_nothing_yet(
    admin_client, alice, make_roadmap
):
    roadmap = make_roadmap(alice)
    content = content_of(roadmap, "c001", "quiz")
    fail(content)
    before = last_event_id()

    response = post_action(admin_client, "reset_to_pending", [content])

    assert response.status_code == 200
    page = response.content.decode()
    assert "Yes, I’m sure" in page
    assert 'name="post" value="yes"' in page
    assert "Concept 1" in page and "quiz" in page
    assert content_of(roadmap, "c001", "quiz").status == ContentStatus.FAILED
    assert last_event_id() == before


def test_reset_to_pending_after_confirmation_resets_and_emits_status_changed(
    admin_client, alice, make_roadmap
):
    roadmap = make_roadmap(alice, concepts=2)
    contents = [content_of(roadmap, "c001", "tutorial"), content_of(roadmap, "c002", "quiz")]
    for content in contents:
        fail(content)
    before = last_event_id()

    response = post_action(admin_client, "reset_to_pending", contents, confirm=True)

    assert response.status_code == 302
    assert [content_of(roadmap, c.concept.concept_id, c.content_type).status for c in contents] == [
        ContentStatus.PENDING,
        ContentStatus.PENDING,
    ]
    events = status_events(roadmap, before)
    assert [
        (e["concept_id"], e["content_type"], e["previous_status"], e["status"]) for e in events
    ] == [
        ("c001", "tutorial", "failed", "pending"),
        ("c002", "quiz", "failed", "pending"),
    ]
    assert all(e["task_id"] is None and e["roadmap_id"] == str(roadmap.pk) for e in events)
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert messages == ["2 content(s) set to pending."]


def test_mark_failed_after_confirmation_fails_pending_content_with_an_event(
    admin_client, alice, make_roadmap
):
    roadmap = make_roadmap(alice)
    content = content_of(roadmap, "c001", "resources")
    before = last_event_id()

    first = post_action(admin_client, "mark_failed", [content])
    assert first.status_code == 200
    assert content_of(roadmap, "c001", "resources").status == ContentStatus.PENDING

    response = post_action(admin_client, "mark_failed", [content], confirm=True)

    assert response.status_code == 302
    failed = content_of(roadmap, "c001", "resources")
    assert failed.status == ContentStatus.FAILED
    assert failed.public_error == "Marked as failed by an operator."
    [event] = status_events(roadmap, before)
    assert (event["previous_status"], event["status"]) == ("pending", "failed")
    assert event["concept_id"] == "c001" and event["content_type"] == "resources"


def test_mark_failed_fences_out_a_running_generation_and_closes_its_task(
    admin_client, alice, make_roadmap, queue_without_worker
):
    roadmap = make_roadmap(alice)
    content = content_of(roadmap, "c001", "tutorial")
    task = services.retry_content(content=content, user=alice).task
    assert content_of(roadmap, "c001", "tutorial").status == ContentStatus.GENERATING
    before = last_event_id()

    response = post_action(admin_client, "mark_failed", [content], confirm=True)

    assert response.status_code == 302
    after = content_of(roadmap, "c001", "tutorial")
    assert (after.status, after.attempt_id, after.lease_expires_at) == ("failed", None, None)
    [event] = status_events(roadmap, before)
    assert (event["previous_status"], event["status"]) == ("generating", "failed")
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED and task.finished_at is not None
    assert task.items.get().state == ItemState.CANCELLED
    last = Event.objects.filter(stream=task.pk).order_by("seq").last()
    assert last.type == "concept_failed" and last.final  # the task stream closes


def test_reset_of_content_already_in_that_status_changes_nothing_and_says_so(
    admin_client, alice, make_roadmap
):
    roadmap = make_roadmap(alice)
    content = content_of(roadmap, "c001", "quiz")
    before = last_event_id()

    response = post_action(admin_client, "reset_to_pending", [content], confirm=True)

    assert response.status_code == 302
    assert last_event_id() == before
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert "already pending" in messages[0]


# --- retry_now ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the engine's thread reads the work
def test_retry_now_starts_one_task_per_roadmap_names_them_and_completes(
    admin_client, alice, bob, make_roadmap
):
    alices = make_roadmap(alice, concepts=2)
    bobs = make_roadmap(bob)
    selected = [
        content_of(alices, "c001", "tutorial"),
        content_of(alices, "c002", "quiz"),
        content_of(bobs, "c001", "resources"),
    ]
    for content in selected:
        fail(content)

    response = post_action(admin_client, "retry_now", selected)

    assert response.status_code == 302
    tasks = list(GenerationTask.objects.order_by("roadmap__owner__username"))
    assert [(t.roadmap_id, t.kind, t.total) for t in tasks] == [
        (alices.pk, TaskKind.BATCH, 2),
        (bobs.pk, TaskKind.BATCH, 1),
    ]
    [message] = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert set(re.findall(r"batch-retry-[0-9a-f]{32}", message)) == {t.pk for t in tasks}

    assert engine.wait_until_idle(timeout=30)

    assert {
        content_of(c.roadmap, c.concept.concept_id, c.content_type).status for c in selected
    } == {ContentStatus.COMPLETED}
    for task in tasks:
        task.refresh_from_db()
        assert task.status == TaskStatus.COMPLETED
        topic = Event.objects.filter(topic=roadmap_topic(task.roadmap_id), stream=task.pk)
        types = list(topic.order_by("seq").values_list("type", flat=True))
        assert types.count("concept_start") == task.total
        assert types.count("concept_complete") == task.total
        assert types[-1] == "task_complete"


def test_retry_now_skips_content_already_generating_and_warns(
    admin_client, alice, make_roadmap, queue_without_worker
):
    roadmap = make_roadmap(alice)
    content = content_of(roadmap, "c001", "quiz")
    running = services.retry_content(content=content, user=alice).task

    response = post_action(admin_client, "retry_now", [content])

    assert response.status_code == 302
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert messages == ["1 content(s) skipped: already generating."]
    assert list(GenerationTask.objects.values_list("pk", flat=True)) == [running.pk]
    assert content_of(roadmap, "c001", "quiz").task_id == running.pk


def test_actions_need_the_change_permission(alice, make_roadmap, django_user_model):
    viewer = django_user_model.objects.create_user(
        username="viewer", password="viewer-password", is_staff=True
    )
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_conceptcontent"))
    client = Client()
    client.login(username="viewer", password="viewer-password")
    roadmap = make_roadmap(alice)
    content = content_of(roadmap, "c001", "quiz")
    fail(content)

    page = client.get(CHANGELIST)
    response = post_action(client, "reset_to_pending", [content], confirm=True)

    assert page.status_code == 200
    assert "reset_to_pending" not in page.content.decode()
    assert content_of(roadmap, "c001", "quiz").status == ContentStatus.FAILED
    assert response.status_code == 200  # no actions offered: the list again, untouched
    assert "Yes, I’m sure" not in response.content.decode()


# --- The ConceptContent list ----------------------------------------------------


def test_changelist_filters_by_status_content_type_and_roadmap(admin_client, alice, make_roadmap):
    first = make_roadmap(alice, concepts=2, title="First")
    second = make_roadmap(alice, title="Second")
    fail(content_of(first, "c002", "quiz"))

    def listed(query: str) -> set[int]:
        response = admin_client.get(CHANGELIST + query)
        assert response.status_code == 200
        return {c.pk for c in response.context["cl"].result_list}

    assert listed("?status__exact=failed") == {content_of(first, "c002", "quiz").pk}
    assert listed("?content_type__exact=tutorial") == set(
        ConceptContent.objects.filter(content_type="tutorial").values_list("pk", flat=True)
    )
    assert listed(f"?roadmap__id__exact={second.pk}") == set(
        second.contents.values_list("pk", flat=True)
    )


def test_changelist_searches_concept_name_roadmap_title_and_task_id(
    admin_client, alice, make_roadmap, queue_without_worker
):
    framework = {
        "stages": [
            {
                "name": "S",
                "modules": [
                    {
                        "name": "M",
                        "concepts": [
                            {"concept_id": "hooks", "name": "React Hooks 基础"},
                            {"concept_id": "jsx", "name": "JSX"},
                        ],
                    }
                ],
            }
        ]
    }
    roadmap = make_roadmap(alice, framework=framework, title="Learn React")
    other = make_roadmap(alice, title="Learn Rust")
    quiz = content_of(roadmap, "jsx", "quiz")
    task = services.retry_content(content=quiz, user=alice).task

    def listed(term: str) -> set[int]:
        response = admin_client.get(CHANGELIST, {"q": term})
        assert response.status_code == 200
        return {c.pk for c in response.context["cl"].result_list}

    assert listed("Hooks 基础") == set(
        roadmap.contents.filter(concept__concept_id="hooks").values_list("pk", flat=True)
    )
    assert listed("Rust") == set(other.contents.values_list("pk", flat=True))
    assert listed(task.pk) == {quiz.pk}


def test_changelist_shows_statuses_as_coloured_badges(admin_client, alice, make_roadmap):
    roadmap = make_roadmap(alice)
    fail(content_of(roadmap, "c001", "quiz"))

    page = admin_client.get(CHANGELIST).content.decode()

    assert re.search(r'class="status-badge status-failed" style="background:#[0-9a-f]{6}', page)
    assert 'class="status-badge status-pending"' in page


def test_content_cannot_be_edited_or_deleted_from_its_page(admin_client, alice, make_roadmap):
    roadmap = make_roadmap(alice)
    content = content_of(roadmap, "c001", "quiz")
    page = f"{CHANGELIST}{content.pk}/change/"

    shown = admin_client.get(page)
    saved = admin_client.post(page, {"status": "completed"})
    deleted = admin_client.post(f"{CHANGELIST}{content.pk}/delete/", {"post": "yes"})

    assert shown.status_code == 200
    assert 'name="_save"' not in shown.content.decode()
    assert saved.status_code == 403
    assert deleted.status_code == 403
    assert content_of(roadmap, "c001", "quiz").status == ContentStatus.PENDING


# --- Roadmap and GenerationTask pages -------------------------------------------


def test_roadmap_admin_lists_owner_and_status_counts(admin_client, alice, make_roadmap):
    roadmap = make_roadmap(alice, concepts=2, title="Learn React")
    fail(content_of(roadmap, "c001", "quiz"))

    page = admin_client.get("/admin/roadmaps/roadmap/").content.decode()

    assert "Learn React" in page and "alice" in page
    assert "pending 5" in page
    assert "failed 1" in page


def test_roadmap_page_shows_structure_and_counts_read_only(admin_client, alice, make_roadmap):
    roadmap = make_roadmap(alice, concepts=2, title="Learn React")
    fail(content_of(roadmap, "c002", "tutorial"))

    page = admin_client.get(f"/admin/roadmaps/roadmap/{roadmap.pk}/change/").content.decode()

    assert "Concept 1" in page and "c002" in page and "Stage" in page
    assert "tutorial: failed" in page
    assert "failed 1" in page


@pytest.mark.django_db(transaction=True)  # the engine's thread reads the work
def test_generation_task_page_shows_items_and_events_read_only(admin_client, alice, make_roadmap):
    roadmap = make_roadmap(alice)
    content = content_of(roadmap, "c001", "tutorial")
    task = services.retry_content(content=content, user=alice).task
    assert engine.wait_until_idle(timeout=30)
    page_url = f"/admin/generation/generationtask/{task.pk}/change/"

    page = admin_client.get(page_url)
    listing = admin_client.get("/admin/generation/generationtask/", {"q": task.pk})
    edit = admin_client.post(page_url, {"status": "failed"})

    html = page.content.decode()
    assert page.status_code == 200
    assert "concept_start" in html and "concept_complete" in html
    assert "Concept 1 (c001)" in html
    assert 'class="status-badge status-completed"' in html
    assert [t.pk for t in listing.context["cl"].result_list] == [task.pk]
    assert edit.status_code == 403
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED


def test_roadmaps_are_not_deleted_from_the_admin(admin_client, alice, make_roadmap):
    """Deletion goes through the API, which refuses while work is in flight."""
    roadmap = make_roadmap(alice)

    response = admin_client.post(f"/admin/roadmaps/roadmap/{roadmap.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Roadmap.objects.filter(pk=roadmap.pk).exists()


# --- Usage records ----------------------------------------------------------------

USAGE = "/admin/generation/usagerecord/"


def usage_page(client: Client, query: dict | None = None):
    response = client.get(USAGE, query or {})
    assert response.status_code == 200
    return response


def test_usage_totals_cover_the_whole_filtered_selection_not_one_page(
    admin_client, alice, bob, settings
):
    settings.GENERATION_PRICES = PRICES
    save(*(record(alice, created_at=at(DAY, i % 24)) for i in range(150)))
    save(*(record(bob, created_at=at(DAY), model="other", cost=None) for _ in range(5)))

    response = usage_page(admin_client, {"user__id__exact": alice.pk})

    assert len(response.context["cl"].result_list) == 100  # one page …
    totals = response.context["usage_totals"]  # … the totals of all 150
    assert (totals.requests, totals.generations, totals.prompt_tokens) == (150, 150, 15000)
    assert totals.completion_tokens == 7500 and totals.cost == Decimal("0.015")
    html = response.content.decode()
    assert '<td class="requests">150</td>' in html
    assert '<td class="cost">0.0150000000</td>' in html
    assert "cost (EUR)" in html


def test_usage_totals_of_a_selection_with_an_unpriced_model_say_the_cost_is_unknown(
    admin_client, alice
):
    save(record(alice, created_at=at(DAY)), record(alice, created_at=at(DAY), cost=None))

    response = usage_page(admin_client)

    assert response.context["usage_totals"].cost is None
    assert "unknown: a model in the selection has no price" in response.content.decode()


def test_usage_list_filters_by_user_provider_model_content_type_outcome_and_date(
    admin_client, alice, bob
):
    records = {
        "alice": record(alice, created_at=at(DAY - dt.timedelta(days=1))),
        "bob": record(bob, created_at=at(DAY - dt.timedelta(days=1))),
        "provider": record(alice, created_at=at(DAY - dt.timedelta(days=1)), provider="local"),
        "model": record(alice, created_at=at(DAY - dt.timedelta(days=1)), model="other"),
        "quiz": record(alice, created_at=at(DAY - dt.timedelta(days=1)), content_type="quiz"),
        "failed": record(alice, created_at=at(DAY - dt.timedelta(days=1)), outcome="failed"),
        "day": record(alice, created_at=at(DAY)),
    }
    save(*records.values())

    def listed(**query) -> set[str]:
        response = usage_page(admin_client, query)
        names = {r.pk: name for name, r in records.items()}
        found = {names[r.pk] for r in response.context["cl"].result_list}
        assert response.context["usage_totals"].requests == len(found)
        return found

    assert listed(user__id__exact=bob.pk) == {"bob"}
    assert listed(provider="local") == {"provider"}
    assert listed(model="other") == {"model"}
    assert listed(content_type__exact="quiz") == {"quiz"}
    assert listed(outcome__exact="failed") == {"failed"}
    # The date filter's own links carry aware datetimes, as here.
    assert listed(created_at__gte=str(at(DAY, 0)), created_at__lt=str(at(DAY, 23, 59))) == {"day"}
    assert len(listed()) == len(records)


def test_usage_records_cannot_be_added_edited_or_deleted(admin_client, alice):
    [saved] = save(record(alice, created_at=at(DAY)))
    page = f"{USAGE}{saved.pk}/change/"

    shown = admin_client.get(page)
    edited = admin_client.post(page, {"prompt_tokens": "0"})
    deleted = admin_client.post(f"{USAGE}{saved.pk}/delete/", {"post": "yes"})
    added = admin_client.get(f"{USAGE}add/")

    assert shown.status_code == 200
    assert 'name="_save"' not in shown.content.decode()
    assert (edited.status_code, deleted.status_code, added.status_code) == (403, 403, 403)
    assert UsageRecord.objects.get().prompt_tokens == 100


# --- provider circuits ----------------------------------------------------------

CIRCUITS = "/admin/generation/providercircuit/"
HOUR = dt.timedelta(hours=1)


def test_circuits_show_their_state_and_an_operator_closes_an_open_one(admin_client):
    now = timezone.now()
    ProviderCircuit.objects.bulk_create(
        [
            ProviderCircuit(name="primary", consecutive_failures=3, opened_until=now + HOUR),
            ProviderCircuit(name="backup", consecutive_failures=1),
            ProviderCircuit(name="spare", consecutive_failures=2, opened_until=now - HOUR),
        ]
    )

    listed = admin_client.get(CIRCUITS).content.decode()
    closed = admin_client.post(
        CIRCUITS, {"action": "close_circuits", ACTION_CHECKBOX_NAME: ["primary"]}
    )

    rows = {
        row: re.sub(r"\s+", " ", listed.split(f">{row}<", 1)[1].split("</tr>")[0])
        for row in ("primary", "backup", "spare")
    }
    assert ">open<" in rows["primary"]
    assert ">closed<" in rows["backup"]
    assert "half-open" in rows["spare"]
    assert closed.status_code == 302
    assert list(
        ProviderCircuit.objects.order_by("name").values_list(
            "name", "consecutive_failures", "opened_until"
        )
    ) == [
        ("backup", 1, None),
        ("primary", 0, None),
        ("spare", 2, now - HOUR),
    ]


def test_a_staff_user_who_may_only_view_circuits_cannot_close_them(make_user):
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_providercircuit"))
    client = Client()
    assert client.login(username="viewer", password="viewer-password")
    until = timezone.now() + HOUR
    ProviderCircuit.objects.create(name="primary", consecutive_failures=3, opened_until=until)

    listed = client.get(CIRCUITS)
    client.post(CIRCUITS, {"action": "close_circuits", ACTION_CHECKBOX_NAME: ["primary"]})

    assert listed.status_code == 200
    assert "close_circuits" not in listed.content.decode()
    assert ProviderCircuit.objects.get().opened_until == until
