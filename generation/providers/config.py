"""The OpenAI-compatible providers, in the order they are tried (DESIGN §6):
GENERATION_PROVIDERS, or the OPENAI_* variables as a list of one named "openai".
`problems()` is what the start-up check reports; the server does not start with any."""

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

KINDS = ("tutorial", "resources", "quiz")
KEYS = {"name", "base_url", "api_key_env", "model", "models"}


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    base_url: str | None
    api_key_env: str
    model: str
    # Per content kind (tutorial, resources, quiz); a kind not named uses `model`.
    models: dict[str, str] = field(default_factory=dict)

    @property
    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "")

    def model_for(self, kind: str) -> str:
        return self.models.get(kind) or self.model


def _from_openai_settings() -> ProviderConfig:
    return ProviderConfig(
        name="openai",
        base_url=settings.OPENAI_BASE_URL,
        api_key_env="OPENAI_API_KEY",
        model=settings.OPENAI_MODEL,
    )


def configured() -> list[ProviderConfig]:
    """The providers in order; call only once `problems()` is empty."""
    entries = settings.GENERATION_PROVIDERS
    if not entries:
        return [_from_openai_settings()]
    return [
        ProviderConfig(
            name=entry["name"],
            base_url=entry["base_url"],
            api_key_env=entry["api_key_env"],
            model=entry["model"],
            models=dict(entry.get("models") or {}),
        )
        for entry in entries
    ]


def names() -> list[str]:
    """The providers generations may use, by the name their usage records carry."""
    if settings.GENERATION_PROVIDER != "openai":
        return [settings.GENERATION_PROVIDER]
    return [config.name for config in configured()]


def problems() -> list[str]:
    """What is wrong with GENERATION_PROVIDERS, one sentence each (the key's value
    is never named, only its variable)."""
    entries = settings.GENERATION_PROVIDERS
    if not isinstance(entries, list):
        return ["GENERATION_PROVIDERS must be a JSON list of providers."]
    found: list[str] = []
    names: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        found.extend(_entry_problems(position, entry, names))
    return found


def _entry_problems(position: int, entry: Any, names: set[str]) -> list[str]:
    where = f"GENERATION_PROVIDERS[{position}]"
    if not isinstance(entry, dict):
        return [f"{where} must be an object."]
    found = []
    unknown = set(entry) - KEYS
    if unknown:
        found.append(f"{where} has unknown keys: {', '.join(sorted(unknown))}.")
    missing = {"name", "base_url", "api_key_env", "model"} - set(entry)
    if missing:
        return [*found, f"{where} lacks {', '.join(sorted(missing))}."]
    name = entry["name"]
    if not isinstance(name, str) or not name:
        found.append(f"{where} needs a name.")
    elif name in names:
        found.append(f"{where}: the name {name!r} is used twice.")
    names.add(name)
    url = urlparse(str(entry["base_url"]))
    if url.scheme not in ("http", "https") or not url.netloc:
        found.append(f"{where} ({name}): base_url {entry['base_url']!r} is not an http(s) URL.")
    variable = entry["api_key_env"]
    if not isinstance(variable, str) or not os.environ.get(variable):
        found.append(f"{where} ({name}): the environment variable {variable!r} is not set.")
    if not isinstance(entry["model"], str) or not entry["model"]:
        found.append(f"{where} ({name}): model must be a model name.")
    models = entry.get("models") or {}
    if not isinstance(models, dict) or set(models) - set(KINDS):
        found.append(f"{where} ({name}): models maps only {', '.join(KINDS)} to model names.")
    return found


def refuse_to_start_if_misconfigured() -> None:
    """For processes that start without heeding the system checks (daphne, Celery
    workers): the same problems, fatal."""
    from django.core.exceptions import ImproperlyConfigured

    found = problems()
    if found:
        raise ImproperlyConfigured(" ".join(found))
