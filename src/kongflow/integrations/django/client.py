"""The SyncClient on Django's own connection: a call runs in the caller's `transaction.atomic()`
(or commits at once in Django's autocommit), on the thread's connection Django manages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from kongflow.engine.sync_client import SyncClient
from kongflow.integrations.django.conf import kongflow_settings


class DjangoClient(SyncClient):
    """A SyncClient whose calls without `conn` run on Django's connection `using` (no pool of
    its own: nothing to open or close)."""

    def __init__(self, using: str, schema: str) -> None:
        super().__init__(schema=schema, migrate=False)
        self.using = using

    def _connection(self) -> Any:
        return _django_connection(self.using)


@cache
def jobs(using: str | None = None) -> DjangoClient:
    """The client for `settings.KONGFLOW` (or the database alias `using`)."""
    config = kongflow_settings()
    return DjangoClient(using or config.database, config.schema)


@contextmanager
def _django_connection(using: str) -> Iterator[psycopg.Connection[Any]]:
    wrapper = connections[using]
    if wrapper.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"kongflow needs PostgreSQL: DATABASES[{using!r}] is {wrapper.vendor}"
        )
    wrapper.ensure_connection()
    raw = wrapper.connection
    if not isinstance(raw, psycopg.Connection):
        raise ImproperlyConfigured(
            "kongflow enqueues through psycopg 3, and Django uses psycopg2 here:"
            " pip install 'psycopg[binary]' (Django 4.2+ prefers it)"
        )
    yield raw


def database_url(using: str) -> str:
    """A libpq connection string for Django's database `using`, password included (for the
    kongflow commands run by `manage.py kongflow`)."""
    with _django_connection(using) as conn:
        return psycopg.conninfo.make_conninfo(conn.info.dsn, password=conn.info.password)
