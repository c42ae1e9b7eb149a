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
    upsert_endpoint: str
    upsert_job: str
    upsert_job_version: str
    latest_job_version: str
    insert_event: str
    insert_run: str
    run_for_start: str
    next_run_number: str
    queue_run: str
    set_run_status: str
    record_status: str
    get_run: str
    run_statuses: str
    lock_run: str
    cancel_run: str


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
        upsert_endpoint=(
            f"insert into {s}.endpoints (environment_id, slug, url) values (%s, %s, %s)"
            " on conflict (environment_id, slug) do update set url = excluded.url,"
            " updated_at = now() returning id"
        ),
        upsert_job=(
            f"insert into {s}.job_definitions (project_id, slug, title) values (%s, %s, %s)"
            " on conflict (project_id, slug) do update set title = excluded.title returning id"
        ),
        upsert_job_version=(
            f"insert into {s}.job_versions (job_id, environment_id, endpoint_id, version,"
            " event_name, event_source, event_filter, metadata)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s)"
            " on conflict (job_id, environment_id, version) do update set"
            " endpoint_id = excluded.endpoint_id, event_name = excluded.event_name,"
            " event_source = excluded.event_source, event_filter = excluded.event_filter,"
            " metadata = excluded.metadata returning id"
        ),
        latest_job_version=(
            f"select j.id as job_id, j.slug as job_slug, v.id as version_id, v.version,"
            " v.endpoint_id, v.event_name, v.event_source"
            f" from {s}.job_definitions j join {s}.job_versions v on v.job_id = j.id"
            " where j.project_id = %s and j.slug = %s and v.environment_id = %s"
            " order by v.created_at desc limit 1"
        ),
        insert_event=(
            f"insert into {s}.event_records (environment_id, event_id, name, source, payload,"
            " context, is_test) values (%s, %s, %s, %s, %s, %s, %s)"
            " on conflict (environment_id, event_id) do nothing returning id"
        ),
        insert_run=(
            f"insert into {s}.job_runs (job_id, version_id, environment_id, endpoint_id,"
            " event_id, is_test, idempotency_key) values (%s, %s, %s, %s, %s, %s, %s)"
            " returning id"
        ),
        run_for_start=f"select id, job_id, status from {s}.job_runs where id = %s for update",
        next_run_number=(
            f"insert into {s}.job_run_counters (job_id, last_number) values (%s, 1)"
            " on conflict (job_id) do update set"
            f" last_number = {s}.job_run_counters.last_number + 1 returning last_number"
        ),
        queue_run=(
            f"update {s}.job_runs set number = %s, status = 'QUEUED', queued_at = now(),"
            " updated_at = now() where id = %s"
        ),
        set_run_status=(f"update {s}.job_runs set status = %s, updated_at = now() where id = %s"),
        record_status=(
            f"insert into {s}.run_status_history (run_id, status, detail) values (%s, %s, %s)"
        ),
        get_run=(
            f"select r.*, j.slug as job_slug from {s}.job_runs r"
            f" join {s}.job_definitions j on j.id = r.job_id"
            " where r.id = %s and r.environment_id = %s"
        ),
        lock_run=(
            f"select status from {s}.job_runs where id = %s and environment_id = %s for update"
        ),
        cancel_run=(
            f"update {s}.job_runs set status = 'CANCELED', completed_at = now(),"
            " updated_at = now() where id = %s"
        ),
        run_statuses=(
            f"select status, detail, at from {s}.run_status_history where run_id = %s order by id"
        ),
    )
