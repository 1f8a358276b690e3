"""The admin site: Django's, with its login under the failed-login limits."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from roadmap_project.logins import LimitedAdminLoginForm, mark_refused


class AdminSite(admin.AdminSite):
    """Staff accounts read every roadmap, so their login is limited like the API's
    and the login page's (roadmap_project.logins): 429 with Retry-After."""

    login_form = LimitedAdminLoginForm

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return mark_refused(super().login(request, extra_context))
