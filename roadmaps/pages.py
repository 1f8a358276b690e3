"""The reference web client's pages: a signed-in user's roadmaps, and
one roadmap with the status of every concept's three contents.

The pages only render what the user may already read through the API (the same
selectors, so someone else's roadmap is a 404 here too). Everything the page then
does — retries, batches, live updates, the content viewers — goes through the
public REST and WebSocket API from `static/roadmaps/client.js`, exactly as an
external frontend would, so the client is also a working example of that API and
this module never imports `generation`."""

from functools import wraps

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.csp import CSP, build_policy
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _

from notifications.selectors import newest_topic_cursor
from roadmap_project.logins import LimitedLoginForm, mark_refused
from roadmaps import selectors
from roadmaps.models import ContentStatus, ContentType, Roadmap, roadmap_topic

ROADMAPS_PER_PAGE = 20
# The public API's base path (roadmap_project.urls), as any client is told it.
API_BASE = "/api/v1"

# Model-written Markdown is sanitised before it reaches the page (client.js); the
# policy is the second wall: only the site's own scripts run, never an inline one,
# so a sanitiser bug still cannot execute model output. Images only from the site
# itself: a Markdown image in model output must not make the reader's browser
# fetch (and so report the reader to) an arbitrary host.
PAGE_POLICY = build_policy(
    {
        "default-src": [CSP.SELF],
        "script-src": [CSP.SELF],
        "style-src": [CSP.SELF],
        "img-src": [CSP.SELF, "data:"],
        "connect-src": [CSP.SELF],
        "object-src": [CSP.NONE],
        "base-uri": [CSP.NONE],
        "form-action": [CSP.SELF],
        "frame-ancestors": [CSP.NONE],
    }
)


def content_security_policy(view):
    """Send PAGE_POLICY with the page (the API's JSON answers need none).

    Not Django's `csp_override`: that decorator only marks the response, and the
    header is written by ContentSecurityPolicyMiddleware, which this project does
    not install (a global SECURE_CSP would also cover the admin and the API docs,
    whose inline scripts it would break)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.headers.setdefault(CSP.HEADER_ENFORCE, PAGE_POLICY)
        return response

    return wrapped


@method_decorator(content_security_policy, name="dispatch")
class LoginView(auth_views.LoginView):
    """Django's login form under the failed-login limits (roadmap_project.logins):
    past one, the form says how long to wait and answers 429 with Retry-After,
    and no password is checked."""

    template_name = "roadmaps/login.html"
    authentication_form = LimitedLoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form: LimitedLoginForm) -> HttpResponse:
        return mark_refused(super().form_invalid(form))


def client_strings() -> dict:
    """The script's words, translated here so the client needs no JS catalogue."""
    return {
        "types": {value: str(label) for value, label in ContentType.choices},
        "statuses": {value: str(label) for value, label in ContentStatus.choices},
        "badge": str(_("%(type)s: %(status)s")),
        "announce": str(_("%(concept)s — %(type)s: %(status)s")),
        "connected": str(_("Live updates: connected")),
        "reconnecting": str(_("Live updates: reconnecting…")),
        "stopped": str(_("Live updates stopped. Reload the page.")),
        "signedOut": str(_("You are signed out. Reload the page to sign in.")),
        "started": str(_("Started: %(total)s")),
        "nothing": str(_("Nothing to do.")),
        "skipped": str(_("Skipped (already generating): %(count)s")),
        "requestFailed": str(_("The request failed: %(detail)s")),
        "loading": str(_("Loading…")),
        "notYet": str(_("Nothing generated yet (status: %(status)s).")),
        "noResources": str(_("No resources.")),
        "answer": str(_("Answer: %(answers)s")),
        "minutes": str(_("%(minutes)s min")),
        "writing": str(_("Writing…")),
    }


@login_required
@content_security_policy
def roadmap_list(request: HttpRequest) -> HttpResponse:
    """The signed-in user's roadmaps (staff: all), newest first, with counts."""
    page = Paginator(selectors.roadmap_list(user=request.user), ROADMAPS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    counts = selectors.status_counts(roadmap_ids=[roadmap.pk for roadmap in page])
    rows = [
        (
            roadmap,
            [
                (ContentType(content_type).label, statuses)
                for content_type, statuses in counts[roadmap.pk].items()
            ],
        )
        for roadmap in page
    ]
    return render(request, "roadmaps/roadmap_list.html", {"page": page, "rows": rows})


@login_required
@content_security_policy
def roadmap_page(request: HttpRequest, roadmap_id) -> HttpResponse:
    """One roadmap's tree with a badge per content; 404 unless the user may see it.

    The stream's cursor is read before the tree: an event stored in between is
    replayed to the script (after the cursor) rather than lost, and nothing older
    is, so a busy roadmap's history is not replayed on every page load."""
    cursor = newest_topic_cursor(topic=roadmap_topic(roadmap_id))
    try:
        roadmap = selectors.roadmap_detail(roadmap_id=roadmap_id, user=request.user)
    except Roadmap.DoesNotExist:
        raise Http404 from None
    order = list(ContentType.values)
    for stage in roadmap.stages.all():
        for module in stage.modules.all():
            for concept in module.concepts.all():
                concept.badges = sorted(
                    concept.contents.all(), key=lambda c: order.index(c.content_type)
                )
    client = {
        "roadmapId": str(roadmap.pk),
        "api": API_BASE,
        "wsPath": f"{API_BASE}/ws/roadmaps/{roadmap.pk}",
        "cursor": cursor,
        "strings": client_strings(),
    }
    return render(request, "roadmaps/roadmap_page.html", {"roadmap": roadmap, "client": client})
