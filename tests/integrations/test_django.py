"""Django: the example shop (examples/django) on a database of its own: its own Django tests
(transactional enqueue, the worker, the admin) pass under Django's test runner, and
`manage.py migrate` / `manage.py kongflow ...` work as a user runs them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django"


@pytest.fixture
def shop_database(database_url: str) -> Iterator[str]:
    """A database of its own for the shop (Django's tables live in its public schema)."""
    name = f"kf_shop_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')  # type: ignore[arg-type]
    yield make_conninfo(database_url, dbname=name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')  # type: ignore[arg-type]
        conn.execute(f'drop database if exists "test_{name}" with (force)')  # type: ignore[arg-type]


def manage(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env={**os.environ, "DATABASE_URL": url, "KONGFLOW_SCHEMA": "shop_jobs", **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_example_shops_django_tests_pass(shop_database: str) -> None:
    done = manage(shop_database, "test", "orders", "--noinput", "-v", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ran 4 tests" in done.stderr and "OK" in done.stderr, done.stderr
    assert "Applying kongflow.0001_kongflow_schema... OK" in done.stderr + done.stdout


def test_migrate_then_kongflow_commands_on_the_projects_database(shop_database: str) -> None:
    migrated = manage(shop_database, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying kongflow.0001_kongflow_schema... OK" in migrated.stdout
    with psycopg.connect(shop_database) as conn:
        versions = conn.execute("select count(*) from shop_jobs.migrations").fetchone()
    assert versions is not None and versions[0] > 0
    again = manage(shop_database, "migrate", "--noinput")  # idempotent, kongflow's part too
    assert again.returncode == 0 and "No migrations to apply" in again.stdout, again.stderr

    enqueue = manage(
        shop_database,
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
    listed = manage(shop_database, "kongflow", "jobs", "list")
    assert listed.returncode == 0 and "orders.charge" in listed.stdout, listed.stderr
    worked = manage(shop_database, "kongflow", "worker", "--once")
    assert worked.returncode == 0, worked.stderr
    assert "running 1 task(s)" in worked.stderr
    with psycopg.connect(shop_database) as conn:
        charged = conn.execute("select charged from orders_order").fetchall()
    assert charged == [(True,)]
    helped = manage(shop_database, "kongflow", "--help")
    assert helped.returncode == 0 and "worker" in helped.stdout
    failed = manage(shop_database, "kongflow", "jobs", "show", "999999")
    assert failed.returncode != 0


def test_a_bad_kongflow_setting_is_a_clear_configuration_error(shop_database: str) -> None:
    done = manage(shop_database, "check", KONGFLOW_SCHEMA="Not A Schema")
    assert done.returncode != 0
    assert "KONGFLOW['SCHEMA']" in done.stderr and "lower-case SQL identifier" in done.stderr
