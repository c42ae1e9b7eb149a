"""KONGFLOW_SCHEMA names the schema of whatever is not given one, as DATABASE_URL names the
database; an explicit schema wins, and a bad name is refused."""

from __future__ import annotations

import pytest

from kongflow import Client, SyncClient, WorkerSettings
from kongflow.settings import DEFAULT_SCHEMA


def test_the_environment_names_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KONGFLOW_SCHEMA", raising=False)
    assert Client().schema == SyncClient().schema == WorkerSettings().schema == DEFAULT_SCHEMA
    monkeypatch.setenv("KONGFLOW_SCHEMA", "app_jobs")
    assert Client().schema == SyncClient().schema == WorkerSettings().schema == "app_jobs"
    assert Client(schema="mine").schema == "mine"
    monkeypatch.setenv("KONGFLOW_SCHEMA", "Not-A-Schema")
    with pytest.raises(ValueError, match="lower-case SQL identifier"):
        Client()
