"""Start-up checks of generation's configuration: a wrong provider list stops
`manage.py check`, migrate and runserver, and the ASGI server (roadmap_project.asgi),
instead of failing each pair later."""

from typing import Any

from django.core import checks

from generation.providers.config import problems


@checks.register()
def check_providers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Error(
            problem,
            hint='Each provider: {"name", "base_url", "api_key_env", "model", "models"}.',
            id="generation.E001",
        )
        for problem in problems()
    ]
