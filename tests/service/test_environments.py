"""Organizations, projects, environments and API keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from typer.testing import CliRunner

from kongflow import Client
from kongflow.cli import app
from kongflow.service import EnvironmentService
from kongflow.service.environments import API_KEY
from kongflow.service.schema import ALL_COMPONENTS


@pytest.fixture
async def service(database_url: str, schema: str) -> AsyncIterator[EnvironmentService]:
    async with Client(database_url, schema=schema, components=ALL_COMPONENTS) as client:
        yield EnvironmentService(client)


async def test_ensure_creates_once_and_keys_have_trigger_devs_form(
    service: EnvironmentService,
) -> None:
    dev = await service.ensure("acme", "web", "DEVELOPMENT")
    assert API_KEY.match(dev.api_key)
    assert dev.api_key.startswith("tr_dev_")
    assert (dev.organization_slug, dev.project_slug, dev.slug, dev.type) == (
        "acme",
        "web",
        "dev",
        "DEVELOPMENT",
    )
    again = await service.ensure("acme", "web", "DEVELOPMENT")
    assert again == dev
    prod = await service.ensure("acme", "web", "PRODUCTION")
    assert prod.api_key.startswith("tr_prod_")
    assert prod.project_id == dev.project_id and prod.id != dev.id


async def test_concurrent_ensure_makes_one_environment(service: EnvironmentService) -> None:
    results = await asyncio.gather(*(service.ensure("org", "p") for _ in range(8)))
    assert len({r.id for r in results}) == 1
    assert len({r.api_key for r in results}) == 1


async def test_authenticate(service: EnvironmentService) -> None:
    dev = await service.ensure("a", "b")
    other = await service.ensure("a", "c")
    assert await service.authenticate(dev.api_key) == dev
    assert await service.authenticate(other.api_key) == other
    forged = dev.api_key[:-1] + ("x" if dev.api_key[-1] != "x" else "y")
    assert await service.authenticate(forged) is None
    assert await service.authenticate("") is None
    assert await service.authenticate("Bearer nonsense") is None


async def test_bad_names_are_refused(service: EnvironmentService) -> None:
    with pytest.raises(ValueError, match="organization"):
        await service.ensure("Not A Slug")
    with pytest.raises(ValueError, match="environment type"):
        await service.ensure("a", "b", "QA")


def test_env_create_command(database_url: str, schema: str) -> None:
    env = {"DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema}
    runner = CliRunner()
    out = runner.invoke(app, ["env", "create", "--org", "acme", "--json"], env=env)
    assert out.exit_code == 0, out.output
    created: dict[str, Any] = json.loads(out.output)
    assert API_KEY.match(created["api_key"])
    again = runner.invoke(app, ["env", "create", "--org", "acme"], env=env)
    assert created["api_key"] in again.output
    bad = runner.invoke(app, ["env", "create", "--type", "qa"], env=env)
    assert bad.exit_code == 1
    assert "--type must be one of" in bad.output


async def test_a_rotated_key_works_until_its_grace_period_ends(
    service: EnvironmentService,
) -> None:
    env = await service.ensure("acme", "web")
    rotated = await service.rotate_key(env, grace_seconds=1.5)
    new = rotated.environment
    assert API_KEY.match(new.api_key) and new.api_key != env.api_key
    assert rotated.old_key_expires_at is not None
    assert await service.authenticate(new.api_key) == new
    assert await service.authenticate(env.api_key) == new  # in grace: the same environment
    await asyncio.sleep(2)
    assert await service.authenticate(env.api_key) is None
    assert await service.authenticate(new.api_key) == new
    assert await service.ensure("acme", "web") == new  # the stored key is the new one


async def test_a_rotation_without_grace_and_a_revocation_stop_old_keys_at_once(
    service: EnvironmentService,
) -> None:
    env = await service.ensure("acme", "web")
    assert (await service.rotate_key(env, grace_seconds=0)).old_key_expires_at is None
    assert await service.authenticate(env.api_key) is None
    current = await service.ensure("acme", "web")
    second = (await service.rotate_key(current, grace_seconds=3600)).environment
    assert await service.authenticate(current.api_key) == second
    revoked = await service.revoke(second)
    for old in (env.api_key, current.api_key, second.api_key):
        assert await service.authenticate(old) is None
    assert await service.authenticate(revoked.environment.api_key) == revoked.environment


async def test_a_grace_period_out_of_bounds_is_refused(service: EnvironmentService) -> None:
    env = await service.ensure("acme", "web")
    with pytest.raises(ValueError, match="grace period"):
        await service.rotate_key(env, grace_seconds=-1)
    assert await service.authenticate(env.api_key) == env
