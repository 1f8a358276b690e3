"""Generation's app: connects its signal receivers and registers the hooks the
lower apps call (roadmaps.hooks, notifications.hooks)."""

from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self) -> None:
        # Here, not at the top: these import models, which are not loaded yet.
        from generation import services, signals, streams  # noqa: F401  (signals: receivers)
        from notifications.hooks import authorize_stream
        from roadmaps.hooks import start_generation

        authorize_stream.register(streams.authorize_stream)
        start_generation.register(services.generate_new_roadmap)
