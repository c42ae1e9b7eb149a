"""kongflow as a Django app (Django 4.2+, on psycopg 3): jobs enqueued through Django's own
database connection, so they commit or roll back with `transaction.atomic()`; the schema applied
by `manage.py migrate`; `manage.py kongflow ...` for the worker and every other kongflow command;
tasks discovered from installed apps; a read-only admin of jobs.

    # settings.py
    INSTALLED_APPS = [..., "kongflow.integrations.django"]
    KONGFLOW = {"SCHEMA": "kongflow", "DATABASE": "default"}  # both optional

    # orders/tasks.py (each installed app's `tasks` module is imported at start-up)
    from kongflow.integrations.django import task

    @task("orders.charge", timeout=30)
    def charge(payload, job):
        Order.objects.filter(id=payload["order"]).update(charged=True)

    # a view
    from kongflow.integrations.django import jobs

    with transaction.atomic():
        order = Order.objects.create(total=42)
        jobs().add_job("orders.charge", {"order": order.id})

    # shell
    python manage.py kongflow worker --concurrency 10
    python manage.py kongflow jobs list --state failed
"""

from __future__ import annotations

from kongflow.extras import require

require("django", "kongflow.integrations.django")

from kongflow.integrations.django.client import DjangoClient, jobs  # noqa: E402
from kongflow.integrations.django.registry import TASKS, task  # noqa: E402

__all__ = ["TASKS", "DjangoClient", "jobs", "task"]
