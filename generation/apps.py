"""Generation's start-up: the receivers it connects, the hooks it registers for
the lower apps (roadmaps.hooks, notifications.hooks) and the periodic work it
registers with the in-process engine."""

from django.apps import AppConfig
from django.db.models.signals import post_delete


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self) -> None:
        # Imported here, as Django asks: these modules import models, which
        # cannot load before the app registry is ready.
        from generation import checks, engine, liveness, selectors, services

        del checks  # imported for its @checks.register()
        from generation.tutorial_files import delete_tutorials_with_roadmap
        from notifications.hooks import authorize_stream
        from roadmap_project.health import provider_states
        from roadmaps.hooks import start_generation

        post_delete.connect(
            delete_tutorials_with_roadmap,
            sender="roadmaps.Roadmap",
            dispatch_uid="generation.delete_roadmap_tutorials",
        )
        engine.run_on_each_loop(liveness.sweep_forever)
        authorize_stream.register(selectors.authorize_stream)
        start_generation.register(services.generate_new_roadmap)
        provider_states.register(selectors.provider_states)
