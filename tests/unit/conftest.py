"""The unit tier: pure logic, no database and no network. `uv run pytest tests/unit` runs it in
seconds; a test here that asks for the database fails at once instead of starting one."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def database_url() -> str:
    pytest.fail("tests/unit runs without a database: move this test to its package's tests")
