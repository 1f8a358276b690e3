"""What can go wrong, in two families.

Service refusals (`ServiceError`) are raised by generation.services (and the
views) and reach the client through the API's error table, by their `code`
(roadmap_project.errors.ERRORS).

Generation failures (`GenerationError`) end a pair `failed`: each carries a fixed,
translatable public message (I7); the raw cause goes to the log with the task id
only."""

import math
from datetime import datetime

from django.utils.translation import gettext as gettext_now
from django.utils.translation import gettext_lazy as _

from generation.models import ws_url
from roadmap_project.errors import ACTIVE_LIMIT, BUDGET_EXCEEDED, DomainError
from roadmaps.models import ContentStatus


class ServiceError(DomainError):
    """A request the services refuse; nothing was changed."""


class AlreadyGenerating(ServiceError):
    """The pair has a live generation; `task_id` names it."""

    code = "already_generating"

    def __init__(self, task_id: str) -> None:
        super().__init__(_("This content is already being generated."))
        self.task_id = task_id

    @property
    def data(self) -> dict:
        """The task in flight, as a started retry names its own."""
        return {
            "task_id": self.task_id,
            "status": ContentStatus.GENERATING.value,
            "ws_url": ws_url(self.task_id),
        }


class TaskNotRunning(ServiceError):
    """The task already finished, so it cannot be cancelled."""

    code = "task_not_running"

    def __init__(self, task_id: str) -> None:
        super().__init__(_("The task has already finished."))
        self.task_id = task_id

    @property
    def data(self) -> dict:
        return {"task_id": self.task_id}


class SelectionTooLarge(ServiceError):
    code = "selection_too_large"

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(
            f"The selection has {size} pairs, more than the limit of {cap}: narrow it "
            "with concept_ids, content_types or statuses."
        )
        self.size, self.cap = size, cap


class TooManyActive(ServiceError):
    """Admission control: the start would take the user past
    GENERATION_MAX_ACTIVE_PER_USER pairs queued or generating."""

    code = ACTIVE_LIMIT

    def __init__(self, *, active: int, starting: int, limit: int) -> None:
        super().__init__(
            gettext_now(
                "You have %(active)d contents queued or generating and this would start "
                "%(starting)d more; the limit is %(limit)d. Wait for some to finish or "
                "cancel a task, then try again."
            )
            % {"active": active, "starting": starting, "limit": limit}
        )
        self.active, self.starting, self.limit = active, starting, limit


class BudgetExceeded(ServiceError):
    """The start would take the user past their daily token budget: tokens used
    today (UTC), reserved by work in flight, and this start's reservation
    (generation.budgets). `retry_after` is the seconds until the budget resets."""

    code = BUDGET_EXCEEDED

    def __init__(
        self, *, daily_tokens: int, used: int, reserved: int, starting: int,
        resets_at: datetime, now: datetime,
    ) -> None:  # fmt: skip
        super().__init__(
            gettext_now(
                "This would reserve %(starting)d tokens, and your daily budget of "
                "%(limit)d tokens has %(remaining)d left (%(used)d used today, %(reserved)d "
                "reserved by work in progress). It resets at %(resets_at)s."
            )
            % {
                "starting": starting,
                "limit": daily_tokens,
                "remaining": max(0, daily_tokens - used - reserved),
                "used": used,
                "reserved": reserved,
                "resets_at": resets_at.strftime("%Y-%m-%d %H:%M UTC"),
            }
        )
        self.daily_tokens, self.used, self.reserved = daily_tokens, used, reserved
        self.starting, self.resets_at = starting, resets_at
        self.retry_after = max(1, math.ceil((resets_at - now).total_seconds()))


class NotGeneratedYet(ServiceError):
    """No version of the pair was ever completed; `status` is its current one."""

    code = "not_generated"

    def __init__(self, status: str) -> None:
        super().__init__(_("No version of this content has been generated yet."))
        self.status = status


class NotGenerating(ServiceError):
    """The pair has no draft to show: it is not generating; `status` is its current one."""

    code = "not_generating"

    def __init__(self, status: str) -> None:
        super().__init__(_("This content is not being generated now."))
        self.status = status


class GenerationError(Exception):
    """A failure with a public message. `retryable` is False for causes a retry
    cannot fix (bad request, rejected credentials, cancellation)."""

    public_message = _("Generation failed because of an internal error. Try again later.")
    retryable = True

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or str(self.public_message))
        self.detail = detail


class ProviderRateLimited(GenerationError):
    public_message = _("The model provider is rate limiting requests. Try again in a minute.")


class ProviderUnavailable(GenerationError):
    public_message = _("The model provider is unavailable right now. Try again later.")


class ProviderTimeout(GenerationError):
    public_message = _("The model provider did not answer in time. Try again later.")


class ProviderRejected(GenerationError):
    public_message = _(
        "The model provider rejected the request. An operator needs to check the "
        "provider configuration."
    )
    retryable = False


class ProviderMisconfigured(ProviderRejected):
    """401/403 or an unknown model: that provider's own configuration is wrong
    (its key, its model), not the request; another provider may serve it."""


class FirstTokenLate(ProviderTimeout):
    """No first token within GENERATION_FIRST_TOKEN_SECONDS (failover only)."""


class AllProvidersDown(GenerationError):
    """Every configured provider failed or had its circuit open for this call."""

    public_message = _("Every model provider is unavailable right now. Try again later.")


class UnusableOutput(GenerationError):
    public_message = _("The model returned unusable output.")


class OutputTruncated(GenerationError):
    public_message = _("The model's answer was cut off before the end. Try again.")


class TookTooLong(GenerationError):
    public_message = _("The generation took too long and was stopped. Try again later.")


class WorkerLost(GenerationError):
    public_message = _("The generation stopped unexpectedly before finishing. Try again.")


class Cancelled(GenerationError):
    public_message = _("Cancelled")
    retryable = False


class MarkedFailed(GenerationError):
    public_message = _("Marked as failed by an operator.")


class ReservationSpent(GenerationError):
    """The attempt's next request could take it past the tokens its start reserved
    (generation.budgets), so it is not sent."""

    public_message = _("The generation needed more tokens than were reserved for it. Try again.")


class Superseded(GenerationError):
    public_message = _("Replaced by a newer request.")
    retryable = False


def public_error_for(exc: BaseException) -> GenerationError:
    """Map any exception to one with a public message; unknown ones are internal."""
    if isinstance(exc, GenerationError):
        return exc
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(repr(exc))
    return GenerationError(repr(exc))
