"""Jobs as Django sees them: an unmanaged, read-only model over kongflow's view of every job (the
waiting and running ones, and finished ones while retained), for the admin."""

from __future__ import annotations

from typing import Any

from django.db import models

from kongflow.integrations.django.conf import kongflow_settings


class DecodedJSONField(models.JSONField):
    """A `json` column (not jsonb): psycopg decodes it already; Django turns off only jsonb's
    decoding, so its own would decode the value twice."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return value


class Job(models.Model):
    id = models.BigIntegerField(primary_key=True)
    queue_name = models.TextField(null=True)
    task_identifier = models.TextField()
    payload = DecodedJSONField(null=True)
    priority = models.IntegerField()
    run_at = models.DateTimeField()
    attempts = models.IntegerField()
    max_attempts = models.IntegerField()
    last_error = models.TextField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    key = models.TextField(null=True)
    locked_by = models.TextField(null=True)
    state = models.TextField()
    finished_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        # "<schema>"."_all_jobs": Django quotes the name whole, so the dot sits inside quotes.
        db_table = f'{kongflow_settings().schema}"."_all_jobs'
        ordering = ("-id",)
        verbose_name = "job"

    def __str__(self) -> str:
        return f"{self.task_identifier} #{self.id} ({self.state})"
