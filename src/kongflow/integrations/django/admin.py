"""A read-only admin of jobs: look, filter, search; changes go through kongflow (the CLI, the
dashboard, the client), which keep the queue's invariants."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from kongflow.integrations.django.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "task_identifier", "queue_name", "state", "attempts", "run_at")
    list_filter = ("state", "task_identifier", "queue_name")
    search_fields = ("task_identifier", "=key", "=queue_name")
    show_full_result_count = False  # a count of every job would cost a scan on a large queue
    readonly_fields = tuple(field.name for field in Job._meta.fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
