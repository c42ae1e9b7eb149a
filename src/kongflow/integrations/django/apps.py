"""The Django app: tasks discovered from installed apps, kongflow's schema kept current by
`manage.py migrate`."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules


class KongflowConfig(AppConfig):
    name = "kongflow.integrations.django"
    label = "kongflow"
    verbose_name = "kongflow"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        autodiscover_modules("tasks")  # each installed app's tasks.py registers its @task
        post_migrate.connect(_migrate_schema, sender=self)


def _migrate_schema(sender: AppConfig, using: str, **kwargs: Any) -> None:
    """After `manage.py migrate`: kongflow's own migrations added since the app's (an upgrade of
    kongflow) are applied too."""
    from kongflow.integrations.django.client import jobs
    from kongflow.integrations.django.conf import kongflow_settings

    if using == kongflow_settings().database:
        jobs(using).migrate()
