"""Provider registry: adding a provider is one module plus one entry here."""

from __future__ import annotations

from worker.errors import InvalidRequest
from worker.providers.base import Provider
from worker.providers.impact import ImpactJobs
from worker.providers.samsara import SamsaraIftaDetail

PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in (SamsaraIftaDetail(), ImpactJobs())}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise InvalidRequest(f"unknown provider {name!r}; known providers: {', '.join(sorted(PROVIDERS))}") from None
