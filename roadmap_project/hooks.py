"""Hooks: a function a higher app provides to a lower one that must not import it
(generation to roadmaps and to notifications), registered in code and checked at
start-up, so a missing one fails `manage.py check` rather than the first request."""

from collections.abc import Callable
from typing import Any, ClassVar

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class Hook[F: Callable[..., Any]]:
    """One hook; `F` is the Protocol its implementation satisfies. The app that
    provides it calls `register()` in its AppConfig.ready()."""

    declared: ClassVar[list["Hook"]] = []

    def __init__(self, name: str) -> None:
        self.name = name
        self.implementation: F | None = None
        Hook.declared.append(self)

    def register(self, implementation: F) -> None:
        self.implementation = implementation

    def __call__(self, **kwargs: Any) -> Any:
        if self.implementation is None:
            raise ImproperlyConfigured(f"Nothing registered the {self.name} hook.")
        return self.implementation(**kwargs)


@checks.register()
def check_hooks_registered(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Error(
            f"Nothing registered the {hook.name} hook.",
            hint="The app that provides it registers it in its AppConfig.ready().",
            id="roadmap_project.E001",
        )
        for hook in Hook.declared
        if hook.implementation is None
    ]
