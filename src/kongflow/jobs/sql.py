"""The jobs service's SQL, in one place (parameterised; the schema name is validated)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from kongflow.settings import validate_schema


@dataclass(frozen=True)
class JobsSQL:
    upsert_organization: str
    upsert_project: str
    find_environment: str
    insert_environment: str
    environment_by_key_hash: str


_ENVIRONMENT_COLUMNS = (
    "e.id, e.slug, e.type, e.api_key, e.project_id, p.slug as project_slug,"
    " p.name as project_name, e.organization_id, o.slug as organization_slug,"
    " o.title as organization_title"
)


@cache
def jobs_sql(schema: str) -> JobsSQL:
    s = f'"{validate_schema(schema)}"'
    environment_from = (
        f"from {s}.runtime_environments e join {s}.projects p on p.id = e.project_id"
        f" join {s}.organizations o on o.id = e.organization_id"
    )
    return JobsSQL(
        upsert_organization=(
            f"insert into {s}.organizations (slug, title) values (%s, %s)"
            " on conflict (slug) do update set slug = excluded.slug returning id"
        ),
        upsert_project=(
            f"insert into {s}.projects (organization_id, slug, name) values (%s, %s, %s)"
            " on conflict (organization_id, slug) do update set slug = excluded.slug returning id"
        ),
        find_environment=(
            f"select {_ENVIRONMENT_COLUMNS} {environment_from}"
            " where e.project_id = %s and e.slug = %s"
        ),
        insert_environment=(
            f"insert into {s}.runtime_environments"
            " (project_id, organization_id, slug, type, api_key, api_key_sha256)"
            " values (%s, %s, %s, %s, %s, %s) on conflict (project_id, slug) do nothing"
        ),
        environment_by_key_hash=(
            f"select {_ENVIRONMENT_COLUMNS} {environment_from} where e.api_key_sha256 = %s"
        ),
    )
