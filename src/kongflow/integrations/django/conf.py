"""kongflow's Django settings, checked: `settings.KONGFLOW = {"SCHEMA": ..., "DATABASE": ...}`."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from kongflow.settings import DEFAULT_SCHEMA, validate_schema

_KNOWN = {"SCHEMA", "DATABASE"}


@dataclass(frozen=True)
class KongflowSettings:
    schema: str
    database: str


def kongflow_settings() -> KongflowSettings:
    """`settings.KONGFLOW`, with its defaults: schema "kongflow", database alias "default"."""
    given = getattr(settings, "KONGFLOW", {})
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"KONGFLOW must be a dict, got {type(given).__name__}")
    unknown = sorted(set(given) - _KNOWN)
    if unknown:
        raise ImproperlyConfigured(
            f"KONGFLOW has unknown keys {unknown}: it takes {sorted(_KNOWN)}"
        )
    try:
        schema = validate_schema(given.get("SCHEMA", DEFAULT_SCHEMA))
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"KONGFLOW['SCHEMA']: {exc}") from exc
    database = given.get("DATABASE", "default")
    if database not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"KONGFLOW['DATABASE'] is {database!r}, which is not in DATABASES"
        )
    return KongflowSettings(schema, database)
