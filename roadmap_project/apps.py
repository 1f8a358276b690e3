"""The project's admin configuration: Django's admin on the project's own site."""

from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    """Django's admin, with `roadmap_project.admin.AdminSite` as its default site,
    and the failed-login counter connected (it counts for every login, not only
    the admin's)."""

    default_site = "roadmap_project.admin.AdminSite"

    def ready(self) -> None:
        super().ready()
        from roadmap_project import logins  # noqa: F401  (connects its signal receiver)
