"""Failed-login limits, the same for every way in: the token endpoint, the login
page and the admin login (DESIGN §8).

Only failures count, so a user who logs in never uses up anyone's allowance; once
a limit is reached every attempt is refused before a password is checked, the
right one too. Failures are counted where Django reports them (the
`user_login_failed` signal that `authenticate()` sends for every entry point), and
checked by each entry point before it authenticates (`retry_after`).

Two windows, as DRF's rate throttles keep them (a list of timestamps in the cache):

* per client address, AUTH_THROTTLE_RATE (10/minute): one address guessing many
  usernames or one. It is the stricter of the two, so it also bounds one username
  guessed from one address.
* per username from any address, AUTH_USERNAME_THROTTLE_RATE (100/hour): a
  password guessed from many addresses. Much higher, so that an attacker cannot
  cheaply lock a user out.

A username is counted as authentication could match it (`normalize_username`): a
variant with spaces, another case or fullwidth letters is the same bucket. The
client address is REMOTE_ADDR, or the one NUM_PROXIES trusted proxies put in
X-Forwarded-For (DRF's `get_ident`). With the cache (Redis) down, logins are
neither counted nor refused (I6: the API keeps answering)."""

import hashlib
import logging
import math
import time
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils.translation import ngettext
from rest_framework.throttling import BaseThrottle

from roadmap_project.throttling import throttle_cache

logger = logging.getLogger(__name__)

# A rate's period by its first letter, as DRF reads "10/minute" (settings check the form).
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def normalize_username(username: str) -> str:
    """The bucket a username counts in: NFKC (as Django's login form normalises),
    stripped (as form and token fields strip) and case-folded."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


@dataclass(frozen=True)
class Window:
    key: str
    rate_setting: str

    def limits(self) -> tuple[int, int]:
        """(failures allowed, seconds) from the setting, read when used."""
        count, period = getattr(settings, self.rate_setting).split("/")
        return int(count), PERIOD_SECONDS[period[0]]


def windows(request: HttpRequest | None, username: object) -> list[Window]:
    """The windows one attempt counts in: its client address and its username."""
    found = []
    if request is not None:
        address = BaseThrottle().get_ident(request)
        found.append(Window(f"login-failures:address:{address}", "AUTH_THROTTLE_RATE"))
    name = normalize_username(username) if isinstance(username, str) else ""
    if name:
        digest = hashlib.sha256(name.encode()).hexdigest()
        found.append(Window(f"login-failures:username:{digest}", "AUTH_USERNAME_THROTTLE_RATE"))
    return found


def recent(history: list[float], *, now: float, seconds: int) -> list[float]:
    return [stamp for stamp in history if stamp > now - seconds]


def retry_after(request: HttpRequest, username: object) -> int | None:
    """Seconds until this attempt may be made, or None if it may be made now."""
    now = time.time()
    waits = []
    try:
        for window in windows(request, username):
            limit, seconds = window.limits()
            history = recent(throttle_cache().get(window.key, []), now=now, seconds=seconds)
            if len(history) >= limit:
                # A place frees when the oldest failure inside the window leaves it.
                waits.append(max(1, math.ceil(min(history) + seconds - now)))
    except Exception:
        logger.warning("Login limits unavailable; attempt allowed", exc_info=True)
        return None
    return max(waits) if waits else None


@receiver(user_login_failed, dispatch_uid="roadmap_project.logins.count_failure")
def count_failure(sender, credentials: dict, request: HttpRequest | None = None, **kwargs) -> None:
    """Every failed `authenticate()` counts in each of its windows."""
    username = credentials.get(get_user_model().USERNAME_FIELD)
    now = time.time()
    try:
        for window in windows(request, username):
            _, seconds = window.limits()
            history = recent(throttle_cache().get(window.key, []), now=now, seconds=seconds)
            throttle_cache().set(window.key, [now, *history], seconds)
    except Exception:
        logger.warning("Login limits unavailable; failure not counted", exc_info=True)


def refusal_message(seconds: int) -> str:
    return ngettext(
        "Too many login attempts. Try again in %(seconds)d second.",
        "Too many login attempts. Try again in %(seconds)d seconds.",
        seconds,
    ) % {"seconds": seconds}


class FailedLoginThrottle(BaseThrottle):
    """The token endpoint's check: 429 with Retry-After past either limit."""

    def allow_request(self, request, view) -> bool:
        username = request.data.get("username") if hasattr(request.data, "get") else None
        self.seconds = retry_after(request, username)
        return self.seconds is None

    def wait(self) -> int | None:
        return self.seconds


class LimitedLoginForm(AuthenticationForm):
    """Django's login form that checks the limits before it checks a password.
    A refused form has a non-field error with code "throttled" and `retry_after`."""

    retry_after: int | None = None

    def clean(self) -> dict:
        self.retry_after = retry_after(self.request, self.data.get("username"))
        if self.retry_after is not None:
            raise ValidationError(refusal_message(self.retry_after), code="throttled")
        return super().clean()


class LimitedAdminLoginForm(LimitedLoginForm, AdminAuthenticationForm):
    """The admin's login form (staff only), with the same limits."""


def mark_refused(response: HttpResponse) -> HttpResponse:
    """A login page whose form was refused answers 429 with Retry-After."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    if isinstance(form, LimitedLoginForm) and form.retry_after is not None:
        response.status_code = 429
        response.headers["Retry-After"] = str(form.retry_after)
    return response
