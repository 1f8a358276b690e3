from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Event streams"

    def ready(self) -> None:
        from notifications import live_store

        live_store.store()  # its client library loaded at start, not under a first timeout
