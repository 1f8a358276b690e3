"""Why a generation failed, as clients may see it (I7). Exceptions carry a fixed,
translatable public message; the raw cause goes to the log with the task id only."""

from django.utils.translation import gettext_lazy as _


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


class UnusableOutput(GenerationError):
    public_message = _("The model returned unusable output.")


class WorkerLost(GenerationError):
    public_message = _("The generation stopped unexpectedly before finishing. Try again.")


class Cancelled(GenerationError):
    public_message = _("Cancelled")
    retryable = False


class MarkedFailed(GenerationError):
    public_message = _("Marked as failed by an operator.")


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
