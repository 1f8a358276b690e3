"""Daily token budgets (DESIGN §4 "Usage and budgets", §6 "Budgets"): a start
reserves the most its pairs can spend, under the same lock as the cap on active
work; one that would take the user past GENERATION_USER_DAILY_TOKENS (or their own
budget) answers 429 `budget_exceeded` with when it resets, and changes nothing; a
finished attempt settles to its real usage; an attempt never spends past what its
start reserved. So spend passes the budget by at most what is reserved in flight."""

import asyncio
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from generation import budgets, engine, liveness, runner, services
from generation.errors import BudgetExceeded, ReservationSpent
from generation.models import GenerationItem, GenerationTask, UsageRecord, UserBudget
from generation.usage import AttemptUsage
from notifications.models import Event
from roadmaps.models import ConceptContent, Roadmap
from roadmaps.services import delete_roadmap
from tests.conftest import auth, framework_with
from tests.support import processes
from tests.support.fake_openai import cut, ok
from tests.support.locks import another_connection_waits_for_a_lock
from tests.support.parallel_starts import parallel_starts
from tests.support.retries import batch_url, retry_url, settled, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def spend(user, tokens: int, *, at: datetime | None = None) -> None:
    """A usage record of `tokens` for the user, as the runner writes one."""
    UsageRecord.objects.create(
        user=user,
        roadmap_id=uuid.uuid4(),
        task_id="earlier-work",
        attempt_id=uuid.uuid4(),
        content_type="quiz",
        provider="openai",
        model="gpt-test",
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
        duration_seconds=1.0,
        outcome="completed",
        created_at=at or timezone.now(),
    )


def content(roadmap, concept_id: str = "c001", content_type: str = "tutorial"):
    return ConceptContent.objects.select_related("concept", "roadmap").get(
        roadmap=roadmap, concept__concept_id=concept_id, content_type=content_type
    )


def reservation_of_roadmap(roadmap) -> int:
    """What generating every pair of the roadmap reserves."""
    contents = ConceptContent.objects.select_related("concept").filter(roadmap=roadmap)
    return sum(budgets.reservation(c, roadmap=roadmap, preferences={}) for c in contents)


def reservation_of(roadmap, concept_id: str = "c001", content_type: str = "tutorial") -> int:
    """What a start of this pair reserves (with no preferences of its own)."""
    return budgets.reservation(
        content(roadmap, concept_id, content_type), roadmap=roadmap, preferences={}
    )


@sync_to_async
def snapshot(user) -> tuple:
    """Everything a refused start must leave as it was."""
    contents = ConceptContent.objects.filter(roadmap__owner=user)
    return (
        sorted(contents.values_list("pk", "status", "attempt_id", "task_id")),
        GenerationTask.objects.filter(owner=user).count(),
        GenerationItem.objects.filter(task__owner=user).count(),
        UsageRecord.objects.filter(user=user).count(),
        Roadmap.objects.filter(owner=user).count(),
        budgets.budget_for(user, now=timezone.now()),
    )


def next_midnight_utc() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


async def retry(api, user, roadmap, concept_id="c001", content_type="tutorial"):
    return await api.post(retry_url(roadmap, concept_id, content_type), headers=auth(user))


async def generate(api, user, roadmap):
    return await api.post(f"/api/v1/roadmaps/{roadmap.pk}/generate", headers=auth(user))


# --- the check at every start ---------------------------------------------------


async def test_a_start_past_the_budget_answers_429_with_when_it_resets_and_changes_nothing(
    api, alice, make_roadmap, settings, no_runner
):
    settings.GENERATION_USER_DAILY_TOKENS = budget = 1_000_000
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)
    in_flight = await retry(api, alice, roadmap, "c001", "quiz")
    assert in_flight.status_code == 202, in_flight.text
    reserved = await sync_to_async(reservation_of)(roadmap, "c001", "quiz")
    starting = await sync_to_async(reservation_of)(roadmap, "c002", "tutorial")
    # One token more than fits: used + reserved in flight + this start = budget + 1.
    await sync_to_async(spend)(alice, budget - reserved - starting + 1)
    before = await snapshot(alice)

    refused = await retry(api, alice, roadmap, "c002", "tutorial")

    assert refused.status_code == 429, refused.text
    body = refused.json()
    assert set(body) == {"detail", "code", "resets_at"}
    assert body["code"] == "budget_exceeded"
    resets_at = next_midnight_utc()
    assert body["resets_at"] == resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    seconds = (resets_at - datetime.now(UTC)).total_seconds()
    assert 0 < int(refused.headers["Retry-After"]) - seconds <= 5
    assert f"This would reserve {starting} tokens" in body["detail"]
    used = budget - reserved - starting + 1
    assert f"has {starting - 1} left ({used} used today, {reserved} reserved" in body["detail"]
    # Every other start is refused the same way: batch, generate, create with generate.
    others = [
        await api.post(batch_url(roadmap), json={"statuses": ["pending"]}, headers=auth(alice)),
        await generate(api, alice, roadmap),
        await api.post(
            "/api/v1/roadmaps",
            json={"title": "More", "framework": framework_with(1), "generate": True},
            headers=auth(alice),
        ),
    ]
    assert [(r.status_code, r.json()["code"]) for r in others] == [(429, "budget_exceeded")] * 3
    assert await snapshot(alice) == before

    # Exactly at the budget is within it.
    await UsageRecord.objects.filter(user=alice).aupdate(completion_tokens=0, prompt_tokens=0)
    await sync_to_async(spend)(alice, budget - reserved - starting)
    accepted = await retry(api, alice, roadmap, "c002", "tutorial")
    assert accepted.status_code == 202, accepted.text
    after = await sync_to_async(budgets.budget_for)(alice, now=timezone.now())
    assert (after.used, after.reserved, after.remaining) == (
        budget - reserved - starting,
        reserved + starting,
        0,
    )


async def test_usage_of_the_previous_utc_day_does_not_count(
    api, alice, make_roadmap, settings, no_runner
):
    settings.GENERATION_USER_DAILY_TOKENS = 100_000
    roadmap = await sync_to_async(make_roadmap)(alice)
    await sync_to_async(spend)(alice, 100_000)
    assert (await retry(api, alice, roadmap)).status_code == 429

    # The same spend, a day earlier: the budget is whole again.
    await UsageRecord.objects.filter(user=alice).aupdate(
        created_at=timezone.now() - timedelta(days=1)
    )

    assert (await retry(api, alice, roadmap)).status_code == 202


def test_the_budget_resets_at_midnight_utc(alice, make_roadmap, settings, no_runner):
    """Time is given, not slept: the same records, read and started against at the
    last instant of a UTC day and at the first of the next."""
    roadmap = make_roadmap(alice)
    pair = content(roadmap)
    one = reservation_of(roadmap)
    settings.GENERATION_USER_DAILY_TOKENS = budget = one + 2_000
    day = datetime(2030, 3, 9, tzinfo=UTC)
    spend(alice, 4_000, at=day + timedelta(hours=23, minutes=59, seconds=59))
    spend(alice, 1_000, at=day - timedelta(seconds=1))  # the day before
    last_instant, next_day = day + timedelta(days=1, microseconds=-1), day + timedelta(days=1)

    assert budgets.budget_for(alice, now=last_instant) == budgets.Budget(
        daily_tokens=budget, used=4_000, reserved=0, remaining=budget - 4_000,
        resets_at=next_day,
    )  # fmt: skip
    assert budgets.budget_for(alice, now=next_day) == budgets.Budget(
        daily_tokens=budget, used=0, reserved=0, remaining=budget, resets_at=day + timedelta(2)
    )

    def start(now: datetime):
        return services.start_generation(
            roadmap=roadmap, user=alice, kind="retry", contents=[pair], now=now
        )

    with pytest.raises(BudgetExceeded) as refused:
        start(last_instant)
    assert (refused.value.resets_at, refused.value.retry_after) == (next_day, 1)
    assert start(next_day).task.total == 1
    assert budgets.budget_for(alice, now=next_day).remaining == budget - one


def test_a_start_read_after_midnight_counts_what_settled_since(
    alice, make_roadmap, settings, no_runner
):
    """A start takes its time before its transaction, and may wait there for the
    roadmap's and the owner's locks: midnight can pass in between. An attempt that
    settled meanwhile has released its reservation and stamped its usage with the
    new day, so the start's reading must still count it, or it would see those
    tokens neither reserved nor used."""
    roadmap = make_roadmap(alice)
    pair = content(roadmap)
    one = reservation_of(roadmap)
    settings.GENERATION_USER_DAILY_TOKENS = one + 2_000
    next_day = datetime(2030, 3, 10, tzinfo=UTC)
    clock_read = next_day - timedelta(microseconds=1)
    spend(alice, 4_000, at=next_day + timedelta(milliseconds=5))  # settled while it waited

    with pytest.raises(BudgetExceeded) as refused:
        services.start_generation(
            roadmap=roadmap, user=alice, kind="retry", contents=[pair], now=clock_read
        )

    assert (refused.value.used, refused.value.reserved) == (4_000, 0)
    assert not GenerationTask.objects.exists()


async def test_a_users_own_budget_wins_over_the_default(
    api, alice, bob, make_user, make_roadmap, settings, no_runner
):
    carol = await sync_to_async(make_user)("carol")
    roadmaps = {u: await sync_to_async(make_roadmap)(u) for u in (alice, bob, carol)}
    settings.GENERATION_USER_DAILY_TOKENS = 1  # nothing fits
    assert (await retry(api, alice, roadmaps[alice])).status_code == 429
    await UserBudget.objects.acreate(user=alice, daily_tokens=None)  # unlimited
    await UserBudget.objects.acreate(user=bob, daily_tokens=10_000_000)

    assert (await retry(api, alice, roadmaps[alice])).status_code == 202
    assert (await retry(api, bob, roadmaps[bob])).status_code == 202
    assert (await retry(api, carol, roadmaps[carol])).status_code == 429

    settings.GENERATION_USER_DAILY_TOKENS = None  # unlimited by default ...
    await UserBudget.objects.acreate(user=carol, daily_tokens=1)  # ... but not for carol
    assert (await retry(api, carol, roadmaps[carol])).status_code == 429


async def test_budgets_are_unlimited_by_default(api, alice, make_roadmap, no_runner):
    from roadmap_project import settings as configured

    assert configured.GENERATION_USER_DAILY_TOKENS is None  # no variable set here
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=3)
    await sync_to_async(spend)(alice, 10**9)

    started = await generate(api, alice, roadmap)

    assert started.status_code == 202, started.text
    budget = await sync_to_async(budgets.budget_for)(alice, now=timezone.now())
    reserved = sum(
        [r async for r in GenerationItem.objects.values_list("reserved_tokens", flat=True)]
    )
    assert (budget.daily_tokens, budget.used, budget.remaining) == (None, 10**9, None)
    assert budget.reserved == reserved > 9 * 4096  # nine pairs, at least an answer each


def test_budget_for_takes_one_query(alice, django_assert_num_queries):
    UserBudget.objects.create(user=alice, daily_tokens=5)
    with django_assert_num_queries(1):
        budgets.budget_for(alice, now=timezone.now())


# --- reservations: held while the work can spend, settled to the real usage --------


async def test_a_finished_generation_settles_to_its_real_usage(
    api, alice, make_roadmap, settings, fake_openai
):
    settings.GENERATION_USER_DAILY_TOKENS = 1_000_000
    roadmap = await sync_to_async(make_roadmap)(alice)
    fake_openai.delay = 0.5  # the request is in flight while the budget is read
    started = await retry(api, alice, roadmap, content_type="quiz")
    assert started.status_code == 202, started.text
    in_flight = await sync_to_async(budgets.budget_for)(alice, now=timezone.now())
    reserved = await sync_to_async(reservation_of)(roadmap, content_type="quiz")
    assert (in_flight.used, in_flight.reserved) == (0, reserved)

    assert (await wait_for(lambda: settled(roadmap, content_type="quiz"), 30)).status == "completed"

    [reported] = fake_openai.usage_reported
    done = await sync_to_async(budgets.budget_for)(alice, now=timezone.now())
    assert (done.used, done.reserved) == (reported["total_tokens"], 0)
    assert done.remaining == 1_000_000 - reported["total_tokens"]


async def test_an_attempt_cancelled_and_deleted_as_it_finishes_still_counts_its_spend(
    api, alice, make_roadmap, settings, fake_openai, monkeypatch
):
    """The task is cancelled and its roadmap deleted (task, items and their
    reservations with it) just before the provider's last chunk, too late for the
    cancel to stop the request: its outcome has nowhere to go, but its tokens were
    spent and count against the budget, as they would had the fence stopped it."""
    settings.GENERATION_USER_DAILY_TOKENS = 1_000_000
    # Too late, always: a fence round between the delete and the last chunk would
    # stop the stream before its usage chunk, and the spend would be estimated. A
    # fresh fence: the running one's thread may be in an earlier test's short sleep.
    monkeypatch.setattr(liveness, "FENCE_CHECK_SECONDS", 60.0)
    monkeypatch.setattr(liveness, "fence", liveness.Fence())
    roadmap = await sync_to_async(make_roadmap)(alice)

    def cancel_and_delete() -> None:  # in the fake server's thread
        services.cancel_task(task_id=GenerationTask.objects.get().pk, user=alice)
        delete_roadmap(roadmap=Roadmap.objects.get(pk=roadmap.pk))

    fake_openai.script(ok(before_finish=cancel_and_delete))

    assert (await retry(api, alice, roadmap)).status_code == 202
    await wait_for(lambda: one_request_done(fake_openai))
    assert await sync_to_async(engine.wait_until_idle, thread_sensitive=False)(timeout=10)

    assert not await Roadmap.objects.filter(pk=roadmap.pk).aexists()
    [reported] = fake_openai.usage_reported
    records = UsageRecord.objects.filter(user=alice, roadmap_id=roadmap.pk)
    assert [(r.prompt_tokens, r.completion_tokens) async for r in records] == [
        (reported["prompt_tokens"], reported["completion_tokens"])
    ]
    budget = await sync_to_async(budgets.budget_for)(alice, now=timezone.now())
    assert (budget.used, budget.reserved) == (reported["total_tokens"], 0)


async def one_request_done(fake_openai) -> bool:
    return len(fake_openai.requests) == 1 and fake_openai.in_flight == 0


def test_a_cancel_releases_queued_pairs_at_once_and_running_ones_when_they_settle(
    alice, make_roadmap, settings, no_runner
):
    """A running attempt fenced out by a cancel may still be spending until it
    notices: its reservation holds until it settles, or one lease if its process is
    gone (here nothing runs it, so it lapses)."""
    settings.GENERATION_LEASE_SECONDS = 90
    roadmap = make_roadmap(alice)
    pairs = list(ConceptContent.objects.filter(roadmap=roadmap).select_related("concept"))
    task = services.retry_contents(contents=ConceptContent.objects.filter(roadmap=roadmap))[0].task
    run = runner.claim_next()  # the first pair begins; nothing will run it
    items = {i.pk: i.reserved_tokens for i in task.items.all()}
    assert len(pairs) == len(items) == 3 and run.reserved_tokens == items[run.item_id]

    services.cancel_task(task_id=task.pk, user=alice)
    now = timezone.now()

    assert budgets.budget_for(alice, now=now).reserved == items[run.item_id]
    lapsed = now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS + 1)
    assert budgets.budget_for(alice, now=lapsed).reserved == 0
    # Were it still alive, its end would settle it (usage recorded with it).
    runner.record_usage(AttemptUsage(run, user_id=alice.pk, roadmap_id=roadmap.pk))
    assert budgets.budget_for(alice, now=now).reserved == 0


# --- an attempt never spends past its reservation --------------------------------


def reserved_and_spent(roadmap) -> tuple[int, int]:
    [item] = GenerationItem.objects.filter(task__roadmap=roadmap)
    records = UsageRecord.objects.filter(roadmap_id=roadmap.pk)
    return item.reserved_tokens, sum(r.prompt_tokens + r.completion_tokens for r in records)


async def test_answers_are_capped_and_every_re_ask_is_covered_by_the_reservation(
    api, alice, make_roadmap, settings, fake_openai
):
    """The cap is sent as max_completion_tokens: a quiz cut there is re-asked, every
    time within the reservation, and the attempt fails as truncated, not for want
    of tokens."""
    settings.GENERATION_MAX_OUTPUT_TOKENS = 30
    settings.GENERATION_OUTPUT_ATTEMPTS = 3
    roadmap = await sync_to_async(make_roadmap)(alice)

    assert (await retry(api, alice, roadmap, content_type="quiz")).status_code == 202
    failed = await wait_for(lambda: settled(roadmap, content_type="quiz"), 30)

    assert [r.body["max_completion_tokens"] for r in fake_openai.requests] == [30, 30, 30]
    assert [u["completion_tokens"] for u in fake_openai.usage_reported] == [30, 30, 30]
    assert failed.status == "failed" and "cut off" in failed.public_error
    reserved, spent = await sync_to_async(reserved_and_spent)(roadmap)
    assert 0 < spent <= reserved


async def test_a_request_that_could_pass_the_reservation_is_not_sent(
    api, alice, make_roadmap, settings, fake_openai
):
    """One ask reserved (one output attempt): a stream cut halfway has spent part of
    it, so the transient round that would follow could pass it and is not sent."""
    settings.GENERATION_OUTPUT_ATTEMPTS = 1
    settings.GENERATION_TRANSIENT_ATTEMPTS = 3
    roadmap = await sync_to_async(make_roadmap)(alice)
    fake_openai.script(cut(after_chunks=3), ok())

    assert (await retry(api, alice, roadmap, content_type="quiz")).status_code == 202
    failed = await wait_for(lambda: settled(roadmap, content_type="quiz"), 30)

    assert len(fake_openai.requests) == 1 and fake_openai.unused_script == 1
    assert failed.status == "failed"
    assert failed.public_error == str(ReservationSpent.public_message)
    reserved, spent = await sync_to_async(reserved_and_spent)(roadmap)
    assert 0 < spent <= reserved


async def test_a_re_ask_after_an_unusable_answer_fits_the_reservation(
    api, alice, make_roadmap, settings, fake_openai
):
    """An unusable answer cost its tokens; the re-ask was reserved for, so it is sent."""
    settings.GENERATION_OUTPUT_ATTEMPTS = 2
    roadmap = await sync_to_async(make_roadmap)(alice)
    fake_openai.script(ok("not the JSON asked for"), ok())

    assert (await retry(api, alice, roadmap, content_type="quiz")).status_code == 202
    done = await wait_for(lambda: settled(roadmap, content_type="quiz"), 30)

    assert done.status == "completed", done.public_error
    assert len(fake_openai.requests) == 2
    reserved, spent = await sync_to_async(reserved_and_spent)(roadmap)
    assert 0 < spent <= reserved


# --- two users, many starts at once ------------------------------------------------


@pytest.fixture
def starts_meet_after_reading_the_budget(monkeypatch):
    """Forces the race: each start, having read its user's budget in its transaction,
    waits until another start of that user has read it too, or some start is blocked
    on a row lock. With the owner's row locked before the read, the second start of a
    user blocks, so the first goes on and commits before the second reads; without
    it both read the same figures and both pass. SQLite lets one writer begin its
    transaction at a time (BEGIN IMMEDIATE), so there it does not wait."""
    real = budgets.budget_for
    met = threading.Condition()
    readers: Counter = Counter()

    def budget_for(user, *, now):
        budget = real(user, now=now)
        with met:
            readers[user.pk] += 1
            met.notify_all()
        if connection.vendor != "postgresql":
            return budget
        deadline = time.monotonic() + 10
        with met:
            while readers[user.pk] < 2 and not another_connection_waits_for_a_lock():
                assert time.monotonic() < deadline, "the other start never read nor waited"
                met.wait(0.02)
        return budget

    monkeypatch.setattr(budgets, "budget_for", budget_for)


async def test_starts_at_once_never_take_a_user_past_the_budget(
    api, alice, bob, make_roadmap, settings, no_runner, starts_meet_after_reading_the_budget
):
    """Two users, each starting two roadmaps of six pairs at once (four request
    threads, each with its own connection) with a budget that holds one start's
    reservation: each gets one 202 and one 429."""
    roadmaps = {
        user: [await sync_to_async(make_roadmap)(user, concepts=2) for _ in range(2)]
        for user in (alice, bob)
    }
    one_start = await sync_to_async(reservation_of_roadmap)(roadmaps[alice][0])
    settings.GENERATION_USER_DAILY_TOKENS = budget = one_start + one_start // 2

    responses = await asyncio.gather(
        *(generate(api, user, roadmap) for user in (alice, bob) for roadmap in roadmaps[user])
    )

    codes = [r.status_code for r in responses]
    assert codes[:2] in ([202, 429], [429, 202]) and codes[2:] in ([202, 429], [429, 202]), [
        r.text for r in responses
    ]
    for user in (alice, bob):
        spent = await sync_to_async(budgets.budget_for)(user, now=timezone.now())
        assert (spent.reserved, spent.used) == (one_start, 0)
        assert spent.reserved <= budget
        assert await GenerationTask.objects.filter(owner=user).acount() == 1


def rows_of(roadmap_id) -> list[tuple]:
    """The roadmap's pairs as a start leaves them."""
    contents = ConceptContent.objects.filter(roadmap=roadmap_id)
    return sorted(contents.values_list("pk", "status", "attempt_id", "task_id"))


@pytest.mark.distributed
@pytest.mark.postgres
def test_starts_from_processes_at_once_never_take_a_user_past_the_budget(alice, bob, make_roadmap):
    """Two users, three processes each (their own interpreter and connection),
    each generating a roadmap of its own in each round, so only the owner's row
    lock orders a user's starts; a barrier releases all six at once. Admission
    (budgets.admit) passes a start only if used + reserved + starting <=
    daily_tokens, read under that lock. Nothing settles here, so after every
    round used + reserved <= daily_tokens. The budget, raised by two starts before
    each round (with half a start to spare), takes exactly two of the three: the
    third is refused having read both of their reservations, and changes nothing.
    Several rounds, so that starts which happened not to overlap cannot hide a
    race (without the lock, a user gets all three)."""
    rounds, users = 4, {"alice": alice, "bob": bob}
    roadmaps = {
        name: [[make_roadmap(user, concepts=2) for _ in range(rounds)] for _ in range(3)]
        for name, user in users.items()
    }
    one_start = reservation_of_roadmap(roadmaps["alice"][0][0])
    earlier = {"alice": 7_000, "bob": 11_000}
    for name, user in users.items():
        spend(user, earlier[name])
    before = {r.pk: rows_of(r) for m in roadmaps.values() for plan in m for r in plan}
    events_before = Event.objects.count()
    plans = [(name, [r.pk for r in plan]) for name in users for plan in roadmaps[name]]

    with parallel_starts(processes.test_database_url(), plans) as release:
        for turn in range(1, rounds + 1):
            for name, user in users.items():
                UserBudget.objects.update_or_create(
                    user=user,
                    defaults={
                        "daily_tokens": earlier[name] + 2 * turn * one_start + one_start // 2
                    },
                )
            outcomes = release()

            assert [o.detail for o in outcomes if o.result == "error"] == []
            for name, user in users.items():
                mine = [o for o in outcomes if o.username == name]
                started = {o.roadmap_id: o.task_id for o in mine if o.result == "started"}
                refused = [o for o in mine if o.result == "refused"]
                assert (len(started), len(refused)) == (2, 1), (turn, mine)
                budget = budgets.budget_for(user, now=timezone.now())
                assert (budget.used, budget.reserved) == (earlier[name], 2 * turn * one_start)
                assert budget.used + budget.reserved <= budget.daily_tokens
                # The refused start read both admitted starts' reservations.
                assert (refused[0].used, refused[0].reserved, refused[0].starting) == (
                    earlier[name], 2 * turn * one_start, one_start
                )  # fmt: skip
                [refused_roadmap] = {o.roadmap_id for o in mine} - set(started)
                assert rows_of(refused_roadmap) == before[refused_roadmap]
                assert not GenerationTask.objects.filter(roadmap=refused_roadmap).exists()
                for roadmap_id, task_id in started.items():
                    task = GenerationTask.objects.get(pk=task_id, roadmap=roadmap_id, owner=user)
                    items = task.items.filter(reserved_for=user)
                    assert items.aggregate(tokens=Sum("reserved_tokens"))["tokens"] == one_start
                    [attempt] = set(items.values_list("attempt_id", flat=True))
                    assert {row[1:] for row in rows_of(roadmap_id)} == {
                        ("generating", attempt, task_id)
                    }
    assert Event.objects.count() == events_before


# --- operators: admin action and command report the refusal ------------------------


def test_retry_now_skips_a_roadmap_over_budget_and_says_why(
    admin_client, admin_user, alice, bob, make_roadmap, no_runner
):
    """The operator starts the tasks and owns them, so their budget pays: here it
    holds one of the two roadmaps' reservations (equal: the same pair)."""
    roadmaps = make_roadmap(alice), make_roadmap(bob)
    selected = [content(roadmap) for roadmap in roadmaps]
    one = reservation_of(roadmaps[0])
    UserBudget.objects.create(user=admin_user, daily_tokens=one + one // 2)

    response = admin_client.post(
        "/admin/roadmaps/conceptcontent/",
        {"action": "retry_now", ACTION_CHECKBOX_NAME: [c.pk for c in selected]},
    )

    assert response.status_code == 302
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    [task] = GenerationTask.objects.all()
    assert messages == [
        f"Started 1 generation(s) in task(s): {task.pk}.",
        "1 content(s) skipped: over the daily token budget.",
    ]
    assert budgets.budget_for(admin_user, now=timezone.now()).reserved == one
    [skipped] = [roadmap for roadmap in roadmaps if roadmap.pk != task.roadmap_id]
    assert content(skipped).status == "pending"


def test_retry_content_command_skips_a_roadmap_over_budget_and_says_why(
    alice, bob, make_roadmap, settings
):
    """The command starts each roadmap for its owner, so the owner's budget pays;
    with the in-process engine it runs the work and waits for it."""
    settings.GENERATION_USER_DAILY_TOKENS = 50_000
    alices, bobs = make_roadmap(alice), make_roadmap(bob)
    spend(alice, 50_000)
    out = StringIO()

    call_command("retry_content", "--status", "pending", "--content-type", "quiz", stdout=out)

    printed = out.getvalue()
    assert "skipped c001 quiz: over the daily token budget" in printed
    [task] = GenerationTask.objects.all()
    assert task.roadmap_id == bobs.pk and f"task {task.pk} (1 pair(s))" in printed
    assert "1 completed, 0 failed." in printed
    assert content(alices, "c001", "quiz").status == "pending"


def test_budgets_are_set_per_user_in_the_admin(admin_client, alice):
    page = admin_client.get("/admin/generation/userbudget/add/")
    assert page.status_code == 200

    saved = admin_client.post(
        "/admin/generation/userbudget/add/", {"user": alice.pk, "daily_tokens": "250000"}
    )

    assert saved.status_code == 302, saved.content[:2000]
    assert UserBudget.objects.get(user=alice).daily_tokens == 250_000
    shown = admin_client.get(f"/admin/generation/userbudget/{alice.pk}/change/")
    assert b"0 tokens used, 0 reserved by work in progress; 250000 left" in shown.content
    assert budgets.budget_for(alice, now=timezone.now()).daily_tokens == 250_000
