"""Test fixtures: one real PostgreSQL per test run, a fresh schema per test.

The server is the embedded one (a throwaway data directory) unless DATABASE_URL is set, from
kongflow's own pytest plugin.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from kongflow import Client


@pytest.fixture(scope="session")
def database_url(kongflow_database_url: str) -> str:
    """The server of kongflow's own pytest plugin (`kongflow.testing`), as users get it."""
    return kongflow_database_url


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A schema name unique to this test, dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'drop schema if exists "{name}" cascade')  # type: ignore[arg-type]


@pytest.fixture
async def client(database_url: str, schema: str) -> AsyncIterator[Client]:
    async with Client(database_url, schema=schema) as client:
        yield client


@pytest.fixture
async def aconn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    """A caller's own connection, outside any pool."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        yield conn
