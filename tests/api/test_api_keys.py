"""API keys through the API and the CLI (rotation, revocation), and database URLs printed
without their password."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from typer.testing import CliRunner

from kongflow import Client
from kongflow.cli import app
from kongflow.cli.env import parse_duration
from kongflow.service.environments import KEY_MEMORY_SECONDS, EnvironmentService
from kongflow.service.schema import ALL_COMPONENTS
from kongflow.settings import mask_url
from tests.api.test_api_hardening import api_stack


async def test_the_api_follows_a_revocation(database_url: str, schema: str) -> None:
    async with api_stack(database_url, schema) as api:
        assert (await api.http.get("/api/v1/endpoints")).status_code == 200
        revoked = await api.jobs.environments.revoke(api.env)
        assert (await api.http.get("/api/v1/endpoints")).status_code == 401
        headers = {"Authorization": f"Bearer {revoked.environment.api_key}"}
        assert (await api.http.get("/api/v1/endpoints", headers=headers)).status_code == 200


def test_rotate_key_and_revoke_from_the_command_line(database_url: str, schema: str) -> None:
    runner = CliRunner()
    base = ["--database-url", database_url, "--schema", schema]
    created = runner.invoke(app, ["env", "create", "--org", "acme", "--json", *base])
    assert created.exit_code == 0, created.output
    old_key = json.loads(created.output)["api_key"]
    rotated = runner.invoke(
        app, ["env", "rotate-key", "--org", "acme", "--grace", "15m", "--json", *base]
    )
    assert rotated.exit_code == 0, rotated.output
    answer = json.loads(rotated.output)
    assert answer["apiKey"] != old_key and answer["oldKeyExpiresAt"]
    revoked = runner.invoke(app, ["env", "revoke", "--org", "acme", *base])
    assert revoked.exit_code == 0, revoked.output
    assert "the old key no longer works" in revoked.output
    missing = runner.invoke(app, ["env", "revoke", "--org", "nobody", *base])
    assert missing.exit_code == 1
    assert "kongflow env create" in missing.output
    bad = runner.invoke(app, ["env", "rotate-key", "--grace", "soon", *base])
    assert bad.exit_code == 2
    assert "duration" in bad.output


def test_durations() -> None:
    assert [parse_duration(d) for d in ("90", "90s", "15m", "2h", "1.5d", "0")] == [
        90,
        90,
        900,
        7200,
        129600,
        0,
    ]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql://u:secret@h:5432/db?sslmode=require",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql:///db?host=/tmp&password=secret", "postgresql:///db?host=/tmp&password=***"),
        ("host=h password=secret dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='se cret' dbname=d", "host=h password=*** dbname=d"),
        ("postgresql://u:p%40ss@[::1]:5432/d", "postgresql://u:***@[::1]:5432/d"),
    ],
)
def test_database_urls_are_shown_with_the_password_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_an_unreachable_database_is_reported_without_its_password() -> None:
    url = "postgresql://kong:hunter2@127.0.0.1:9/db?connect_timeout=2"
    out = CliRunner().invoke(app, ["migrate", "--database-url", url])
    assert out.exit_code == 1
    assert "hunter2" not in out.output
    assert "kong:***@127.0.0.1:9" in out.output


async def test_a_key_another_process_revokes_is_refused_once_forgotten(
    database_url: str, schema: str
) -> None:
    async with api_stack(database_url, schema) as api:
        assert (await api.http.get("/api/v1/endpoints")).status_code == 200  # remembered now
        # `kongflow env revoke` in another process: this API's memory of the key is not told.
        async with Client(database_url, schema=schema, components=ALL_COMPONENTS) as client:
            await EnvironmentService(client).revoke(api.env)
        deadline = time.monotonic() + KEY_MEMORY_SECONDS + 5
        while (await api.http.get("/api/v1/endpoints")).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key was still taken"
            await asyncio.sleep(0.2)
