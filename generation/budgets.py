"""Daily token budgets (DESIGN §6 "Budgets"): what one user may spend per UTC day,
what a start reserves, and the check every start makes.

A user's budget is their UserBudget row if they have one (an empty limit there
means unlimited), else GENERATION_USER_DAILY_TOKENS (unset: unlimited). Used
today is the sum of the user's usage records since 00:00 UTC, with no end: a
start reads the clock before it waits for its locks, and should midnight pass
meanwhile, what settled since is stamped with the new day and no longer
reserved, so it must still count.

A start reserves, for each pair, the most the pair's attempt can spend
(`reservation`), and is refused whole (BudgetExceeded) when used + reserved by
work in flight + its own reservation would pass the budget. It checks in its
transaction, after taking the owner's row lock (generation.ledger.lock_owner),
so two starts of one user cannot both pass on the same reading; the reads are
one statement, so they see one snapshot.

A reservation is held by its item (GenerationItem.reserved_*) from the start
until the attempt settles: the runner writes the attempt's usage records and
releases its reservation in one transaction (`settle`), so a reader sees those
tokens reserved or used, never neither and never both. An item that ends before
it ran is released at once; one ended by someone else while its attempt ran
(cancel, reset, take-over, sweep) stays held until that attempt settles, or for
one lease should its process be gone (`release`).

The attempt is held to its reservation (generation.providers.metering): no
request is sent that could take it past. So a user's spend passes the budget by
at most what is reserved in flight, never by more."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Exists, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from generation.errors import BudgetExceeded
from generation.models import GenerationItem, ItemState, UsageRecord, UserBudget
from generation.providers import prompts
from generation.providers.base import GenerationRequest
from generation.providers.metering import request_bound
from generation.schemas import Quiz, ResourceList
from roadmaps.models import ConceptContent, ContentType, Roadmap

# What the provider policy sends first for each content type: prompt and schema.
FIRST_ASK = {
    ContentType.TUTORIAL: (prompts.tutorial_messages, None),
    ContentType.RESOURCES: (prompts.resources_messages, ResourceList),
    ContentType.QUIZ: (prompts.quiz_messages, Quiz),
}
LONGEST_REASK = prompts.reask_message("x" * prompts.REASK_PROBLEM_MAX_BYTES)


@dataclass(frozen=True)
class Budget:
    """A user's budget for the UTC day of `now`. `daily_tokens` and `remaining`
    are None when unlimited; `remaining` never goes below 0."""

    daily_tokens: int | None
    used: int
    reserved: int
    remaining: int | None
    resets_at: datetime


def day_of(now: datetime) -> tuple[datetime, datetime]:
    """The UTC day `now` is in: its first instant and the next day's."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def held_by(user_id, *, now: datetime):
    """The items whose reservation still counts against the user's budget."""
    return GenerationItem.objects.filter(reserved_for=user_id).filter(
        Q(reserved_until__isnull=True) | Q(reserved_until__gt=now)
    )


def budget_for(user, *, now: datetime) -> Budget:
    """The user's budget, used and reserved tokens, in one query (used: since the
    start of `now`'s day)."""
    start, end = day_of(now)
    used = (
        UsageRecord.objects.filter(user=OuterRef("pk"), created_at__gte=start)
        .values("user")
        .annotate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")))
        .values("tokens")
    )
    reserved = (
        held_by(OuterRef("pk"), now=now)
        .values("reserved_for")
        .annotate(tokens=Sum("reserved_tokens"))
        .values("tokens")
    )
    own = UserBudget.objects.filter(user=OuterRef("pk"))
    row = (
        get_user_model()
        .objects.filter(pk=user.pk)
        .values(
            has_own=Exists(own),
            own=Subquery(own.values("daily_tokens")),
            used=Coalesce(Subquery(used), 0),
            reserved=Coalesce(Subquery(reserved), 0),
        )
        .get()
    )
    daily_tokens = row["own"] if row["has_own"] else settings.GENERATION_USER_DAILY_TOKENS
    used, reserved = int(row["used"]), int(row["reserved"])
    remaining = None if daily_tokens is None else max(0, daily_tokens - used - reserved)
    return Budget(daily_tokens, used, reserved, remaining, resets_at=end)


def reservation(content: ConceptContent, *, roadmap: Roadmap, preferences: dict) -> int:
    """The most one pair's attempt can spend: GENERATION_OUTPUT_ATTEMPTS asks, the
    first with the pair's prompt, each re-ask with the longest re-ask message too,
    each with its longest answer (metering.request_bound). `content` comes with
    its concept."""
    messages_for, schema = FIRST_ASK[content.content_type]
    messages = messages_for(
        GenerationRequest.about(roadmap=roadmap, concept=content.concept, preferences=preferences)
    )
    reasks = max(1, settings.GENERATION_OUTPUT_ATTEMPTS) - 1
    return request_bound(messages, schema) + reasks * request_bound(
        [*messages, LONGEST_REASK], schema
    )


def admit(user, *, starting: int, now: datetime) -> None:
    """Refuse a start that reserves `starting` tokens, if that would take the user
    past their budget for the day, before anything is written. The caller holds
    the owner's row lock (generation.ledger.lock_owner)."""
    if not starting:
        return
    budget = budget_for(user, now=now)
    if budget.daily_tokens is None:
        return
    if budget.used + budget.reserved + starting > budget.daily_tokens:
        raise BudgetExceeded(
            daily_tokens=budget.daily_tokens,
            used=budget.used,
            reserved=budget.reserved,
            starting=starting,
            resets_at=budget.resets_at,
            now=now,
        )


def release(item: GenerationItem, *, ended_from: str, now: datetime) -> list[str]:
    """An item ends (its new state is already set): an item that never ran lets
    go of its reservation; one whose attempt ran keeps it until the attempt
    settles, at most one lease. Returns the fields changed, for the caller's save."""
    if item.reserved_for_id is None:
        return []
    if ended_from == ItemState.QUEUED:
        item.reserved_for = None
        return ["reserved_for"]
    item.reserved_until = now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
    return ["reserved_until"]


def settle(item_id: int) -> None:
    """The attempt ended and its usage records are written in the caller's
    transaction: they now count instead of the reservation."""
    GenerationItem.objects.filter(pk=item_id).update(reserved_for=None)
