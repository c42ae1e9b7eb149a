"""Organizations, projects and runtime environments, and the API keys that authenticate them.

Keys have trigger.dev's form `tr_<dev|stg|prod>_<24 letters and digits>` (its SDK refuses
others). They are looked up by SHA-256 and then compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from psycopg.rows import class_row

from kongflow.engine.client import Client
from kongflow.service.sql import jobs_sql

EnvironmentType = Literal["DEVELOPMENT", "STAGING", "PRODUCTION"]
ENVIRONMENT_SLUGS: dict[str, str] = {"DEVELOPMENT": "dev", "STAGING": "stg", "PRODUCTION": "prod"}
API_KEY = re.compile(r"^tr_(dev|stg|prod)_[A-Za-z0-9]{24}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Environment:
    id: str
    slug: str
    type: str
    api_key: str
    project_id: str
    project_slug: str
    project_name: str
    organization_id: str
    organization_slug: str
    organization_title: str


def generate_api_key(environment_type: str) -> str:
    slug = ENVIRONMENT_SLUGS[environment_type]
    return f"tr_{slug}_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def key_digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


@dataclass(frozen=True)
class RotatedKey:
    """A new key; the old one authenticates until `old_key_expires_at` (None: it stopped)."""

    environment: Environment
    old_key_expires_at: datetime | None


def check_slug(value: str, what: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"{what} must be lower-case letters, digits and dashes (e.g. 'my-project'), "
            f"got {value!r}"
        )
    return value


#: How long an environment's current key is remembered (a request with it then costs no
#: lookup; a rotated key in its grace period is looked up every time). A key this service
#: rotates or revokes is forgotten at once; one another process (`kongflow env revoke`) stops
#: is refused here at most this much later.
KEY_MEMORY_SECONDS = 5.0
KEYS_REMEMBERED = 1024


class EnvironmentService:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._sql = jobs_sql(client.schema)
        self._known: dict[str, tuple[float, Environment]] = {}  # key -> (until, environment)
        self._generation = 0  # moves on whenever keys change, so no lookup from before is kept

    async def ensure(
        self,
        organization: str = "default",
        project: str = "default",
        environment_type: str = "DEVELOPMENT",
    ) -> Environment:
        """The environment of this type in org/project, created (with both) if missing."""
        slug = _environment_slug(organization, project, environment_type)
        api_key = generate_api_key(environment_type)
        async with self.client.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(self._sql.upsert_organization, (organization, organization))
            organization_id = str(_first(await cur.fetchone()))
            cur = await conn.execute(self._sql.upsert_project, (organization_id, project, project))
            project_id = str(_first(await cur.fetchone()))
            await conn.execute(
                self._sql.insert_environment,
                (project_id, organization_id, slug, environment_type, api_key, key_digest(api_key)),
            )
            async with conn.cursor(row_factory=class_row(Environment)) as env_cur:
                await env_cur.execute(self._sql.find_environment, (project_id, slug))
                found: Environment | None = await env_cur.fetchone()
        assert found is not None
        return found

    async def rotate_key(self, environment: Environment, grace_seconds: float) -> RotatedKey:
        """Issue a new key. The old one keeps working for `grace_seconds` (0: stops now), so
        clients can move over; webhooks are signed, and endpoints called, with the new one."""
        if not 0 <= grace_seconds <= 366 * 24 * 3600:
            raise ValueError(f"the grace period must be 0 to 366 days, got {grace_seconds!r} s")
        return await self._replace_key(environment, grace_seconds)

    async def revoke(self, environment: Environment) -> RotatedKey:
        """Issue a new key, and stop the current one and every rotated one at once."""
        return await self._replace_key(environment, None)

    async def _replace_key(
        self, environment: Environment, grace_seconds: float | None
    ) -> RotatedKey:
        api_key = generate_api_key(environment.type)
        expires_at: datetime | None = None
        async with self.client.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(self._sql.lock_environment, (environment.id,))
            old_hash = _first(await cur.fetchone())
            if grace_seconds is None:
                await conn.execute(self._sql.drop_retired_keys, (environment.id,))
            elif grace_seconds > 0:
                cur = await conn.execute(
                    self._sql.retire_api_key,
                    {"hash": old_hash, "id": environment.id, "grace": grace_seconds},
                )
                expires_at = _first(await cur.fetchone())
            await conn.execute(
                self._sql.set_api_key, (api_key, key_digest(api_key), environment.id)
            )
        self._forget_keys()
        return RotatedKey(replace(environment, api_key=api_key), expires_at)

    async def find(
        self, organization: str, project: str, environment_type: str
    ) -> Environment | None:
        """The environment of this type in org/project, if it exists."""
        slug = _environment_slug(organization, project, environment_type)
        async with (
            self.client.pool.connection() as conn,
            conn.cursor(row_factory=class_row(Environment)) as cur,
        ):
            await cur.execute(self._sql.find_environment_by_slugs, (organization, project, slug))
            found: Environment | None = await cur.fetchone()
        return found

    async def by_id(self, environment_id: str) -> Environment | None:
        async with (
            self.client.pool.connection() as conn,
            conn.cursor(row_factory=class_row(Environment)) as cur,
        ):
            await cur.execute(self._sql.environment_by_id, (environment_id,))
            found: Environment | None = await cur.fetchone()
        return found

    async def authenticate(self, api_key: str) -> Environment | None:
        """The environment this key belongs to (its current key, or a rotated one still in its
        grace period), or None; remembered for `KEY_MEMORY_SECONDS`."""
        known = self._known.get(api_key)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        generation = self._generation
        environment, current = await self._look_up(api_key)
        if environment is None or not current or generation != self._generation:
            return environment  # a key in its grace period is looked up until it ends
        if len(self._known) >= KEYS_REMEMBERED:
            self._known.clear()
        self._known[api_key] = (time.monotonic() + KEY_MEMORY_SECONDS, environment)
        return environment

    def _forget_keys(self) -> None:
        self._generation += 1
        self._known.clear()

    async def _look_up(self, api_key: str) -> tuple[Environment | None, bool]:
        """The key's environment, and whether the key is its current one."""
        if not API_KEY.match(api_key or ""):
            return None, False
        digest = key_digest(api_key)
        async with (
            self.client.pool.connection() as conn,
            conn.cursor(row_factory=class_row(Environment)) as cur,
        ):
            await cur.execute(self._sql.environment_by_key_hash, (digest,))
            environment: Environment | None = await cur.fetchone()
            if environment is not None:
                if hmac.compare_digest(environment.api_key, api_key):
                    return environment, True
                return None, False
            await cur.execute(self._sql.environment_by_retired_key_hash, (digest,))
            retired: Environment | None = await cur.fetchone()
        return retired, False


def _environment_slug(organization: str, project: str, environment_type: str) -> str:
    check_slug(organization, "organization")
    check_slug(project, "project")
    if environment_type not in ENVIRONMENT_SLUGS:
        raise ValueError(
            f"environment type must be one of {', '.join(ENVIRONMENT_SLUGS)}, "
            f"got {environment_type!r}"
        )
    return ENVIRONMENT_SLUGS[environment_type]


def _first(row: Any) -> Any:
    assert row is not None
    return row[0]
