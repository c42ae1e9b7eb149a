"""Django: the example shop (examples/django) on a database of its own: its own Django tests
(transactional enqueue, the worker, the admin) pass under Django's test runner, and
`manage.py migrate` / `manage.py kongflow ...` work as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django"


def manage(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env={**os.environ, "DATABASE_URL": url, "KONGFLOW_SCHEMA": "shop_jobs", **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_example_shops_django_tests_pass(app_database: str) -> None:
    done = manage(app_database, "test", "orders", "--noinput", "-v", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ran 4 tests" in done.stderr and "OK" in done.stderr, done.stderr
    assert "Applying kongflow.0001_kongflow_schema... OK" in done.stderr + done.stdout


def test_migrate_then_kongflow_commands_on_the_projects_database(app_database: str) -> None:
    migrated = manage(app_database, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying kongflow.0001_kongflow_schema... OK" in migrated.stdout
    with psycopg.connect(app_database) as conn:
        versions = conn.execute("select count(*) from shop_jobs.migrations").fetchone()
    assert versions is not None and versions[0] > 0
    again = manage(app_database, "migrate", "--noinput")  # idempotent, kongflow's part too
    assert again.returncode == 0 and "No migrations to apply" in again.stdout, again.stderr

    enqueue = manage(
        app_database,
        "shell",
        "-c",
        "from django.db import transaction\n"
        "from orders.models import Order\n"
        "from kongflow.integrations.django import jobs\n"
        "with transaction.atomic():\n"
        "    order = Order.objects.create(total=5)\n"
        "    jobs().add_job('orders.charge', {'order': order.id})\n",
    )
    assert enqueue.returncode == 0, enqueue.stderr
    listed = manage(app_database, "kongflow", "jobs", "list")
    assert listed.returncode == 0 and "orders.charge" in listed.stdout, listed.stderr
    worked = manage(app_database, "kongflow", "worker", "--once")
    assert worked.returncode == 0, worked.stderr
    assert "running 1 task(s)" in worked.stderr
    with psycopg.connect(app_database) as conn:
        charged = conn.execute("select charged from orders_order").fetchall()
    assert charged == [(True,)]
    helped = manage(app_database, "kongflow", "--help")
    assert helped.returncode == 0 and "worker" in helped.stdout
    failed = manage(app_database, "kongflow", "jobs", "show", "999999")
    assert failed.returncode != 0


def test_a_bad_kongflow_setting_is_a_clear_configuration_error(app_database: str) -> None:
    done = manage(app_database, "check", KONGFLOW_SCHEMA="Not A Schema")
    assert done.returncode != 0
    assert "KONGFLOW['SCHEMA']" in done.stderr and "lower-case SQL identifier" in done.stderr
