"""Fixtures for the example applications: each gets a database of its own on the test server
(their tables live in its public schema, as an application's do)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo


@pytest.fixture
def app_database(database_url: str) -> Iterator[str]:
    """A fresh database's connection string, dropped afterwards with the test database Django's
    runner makes beside it."""
    name = f"kf_app_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')  # type: ignore[arg-type]
    yield make_conninfo(database_url, dbname=name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for database in (name, f"test_{name}"):
            conn.execute(f'drop database if exists "{database}" with (force)')  # type: ignore[arg-type]
