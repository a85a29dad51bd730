"""The explicit provider registry: kind -> (label, dotted path), imported lazily."""

from __future__ import annotations

from functools import cache
from importlib import import_module

from media_jobs.providers.base import Provider, ProviderError

PROVIDERS: dict[str, tuple[str, str]] = {
    "local": ("Built-in engine", "media_jobs.providers.local.LocalProvider"),
    "auphonic": ("Auphonic", "media_jobs.providers.auphonic.AuphonicProvider"),
    "dolby": ("Dolby.io Media", "media_jobs.providers.dolby.DolbyProvider"),
    "apyhub": ("ApyHub", "media_jobs.providers.apyhub.ApyHubProvider"),
    "audioscrape": ("Audioscrape", "media_jobs.providers.audioscrape.AudioscrapeProvider"),
    "respeecher": ("Respeecher", "media_jobs.providers.respeecher.RespeecherProvider"),
}

__all__ = ["PROVIDERS", "Provider", "ProviderError", "get_provider", "provider_choices"]


def provider_choices() -> list[tuple[str, str]]:
    """Return model field choices derived from the registry."""
    return [(kind, label) for kind, (label, _) in PROVIDERS.items()]


@cache
def get_provider(kind: str) -> Provider:
    """Return the provider for a kind, or raise KeyError."""
    _, path = PROVIDERS[kind]
    module, name = path.rsplit(".", 1)
    return getattr(import_module(module), name)()
