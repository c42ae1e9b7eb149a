"""The jobs service's SQL, in one place (parameterised; the schema name is validated). A query
read into a row model (`jobs.rows`) selects exactly that model's columns."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from kongflow.engine.sql import engine_sql
from kongflow.settings import validate_schema


@dataclass(frozen=True)
class JobsSQL:
    # environments
    upsert_organization: str
    upsert_project: str
    find_environment: str
    find_environment_by_slugs: str
    insert_environment: str
    environment_by_key_hash: str
    environment_by_retired_key_hash: str
    environment_by_id: str
    lock_environment: str
    retire_api_key: str
    set_api_key: str
    drop_retired_keys: str
    # endpoints and jobs
    upsert_endpoint: str
    endpoint_by_id: str
    list_endpoints: str
    mark_endpoint_indexed: str
    upsert_job: str
    upsert_job_version: str
    latest_job_version: str
    version_by_id: str
    matching_versions: str
    # events
    insert_event: str
    event_by_event_id: str
    lock_event: str
    lock_event_by_event_id: str
    mark_event_delivered: str
    cancel_event: str
    # runs
    lock_idempotency_key: str
    run_by_idempotency_key: str
    create_run: str
    create_test_run: str
    run_for_event: str
    run_for_start: str
    next_run_number: str
    queue_run: str
    record_status: str
    get_run: str
    job_exists: str
    runs_of_job: str
    run_statuses: str
    lock_run: str
    lock_run_status: str
    run_status: str
    cancel_run: str
    # execution
    run_context: str
    lock_run_context: str
    begin_execution: str
    finish_execution: str
    finish_execution_early: str
    fail_stalled_runs: str
    set_run_output: str
    # io tasks
    run_for_task: str
    insert_task: str
    insert_task_of_open_run: str
    task_by_key: str
    restart_task: str
    lock_task: str
    lock_task_of_run: str
    complete_task: str
    fail_task: str
    task_of_run: str
    task_by_id: str
    failed_task_of_run: str
    retry_task: str
    set_task_output_properties: str
    start_waiting_task: str
    waiting_siblings: str
    completed_noop_keys: str
    completed_tasks: str
    completed_tasks_from: str
    close_open_tasks: str
    run_tasks: str
    add_yielded_execution: str
    # io statuses and the key-value store
    upsert_io_status: str
    run_io_statuses: str
    get_value: str
    set_value: str
    delete_value: str
    # schedules
    upsert_schedule: str
    stop_other_schedules: str
    stop_schedule: str
    stop_unlisted_schedules: str
    lock_schedule: str
    schedule_of_version: str
    set_last_tick: str
    tick_pending: str
    # subscriptions
    insert_subscription: str
    pending_subscriptions: str
    subscription: str
    mark_subscription_delivered: str


_ENVIRONMENT_COLUMNS = (
    "e.id, e.slug, e.type, e.api_key, e.project_id, p.slug as project_slug,"
    " p.name as project_name, e.organization_id, o.slug as organization_slug,"
    " o.title as organization_title"
)

_ENDPOINT_COLUMNS = "id, environment_id, slug, url, indexed_at, created_at, updated_at"

_EVENT_COLUMNS = (
    'id, environment_id, event_id, name, source, payload, context, is_test, "timestamp",'
    " deliver_at, delivered_at, created_at, cancelled_at"
)

_VERSION_COLUMNS = (
    "j.id as job_id, j.slug as job_slug, v.id as version_id, v.version, v.endpoint_id,"
    " v.environment_id, v.event_names[1] as event_name, v.event_source, v.event_filter"
)

_TASK_COLUMNS = (
    "id, run_id, idempotency_key, display_key, name, icon, description, status, noop, params,"
    " output, error, properties, output_properties, style, operation, parent_id, parallel,"
    " attempts, retry_at, delay_until, started_at, completed_at, created_at"
)

_CACHED_TASK_COLUMNS = "id, idempotency_key, status, noop, output, parent_id"

_RUN_COLUMNS = (
    "r.id, j.slug as job_slug, v.version, r.number, r.status, r.is_test, r.output,"
    " ev.event_id, r.idempotency_key, r.created_at, r.queued_at, r.started_at, r.completed_at,"
    " r.updated_at, r.execution_count, r.execution_duration_ms"
)


@cache
def jobs_sql(schema: str) -> JobsSQL:
    s = f'"{validate_schema(schema)}"'
    environment_from = (
        f"from {s}.runtime_environments e join {s}.projects p on p.id = e.project_id"
        f" join {s}.organizations o on o.id = e.organization_id"
    )
    run_from = (
        f"from {s}.job_runs r join {s}.job_definitions j on j.id = r.job_id"
        f" join {s}.job_versions v on v.id = r.version_id"
        f" join {s}.event_records ev on ev.id = r.event_id"
    )
    # A job's latest version in an environment.
    latest_version = (
        f"select {_VERSION_COLUMNS}"
        f" from {s}.job_definitions j join {s}.job_versions v on v.job_id = j.id"
        " where j.project_id = %(project_id)s and j.slug = %(job_slug)s"
        " and v.environment_id = %(environment_id)s"
        " order by v.registered_at desc limit 1"
    )
    # Tasks still open, which a run that ends closes.
    open_task = "status in ('PENDING', 'WAITING', 'RUNNING')"
    # What a new run (the CTE `run`) comes with: its history and its execution job (a plain
    # SELECT in a WITH runs only when read, so the statements select its count).
    queued_run = (
        f"history as (insert into {s}.run_status_history (run_id, status)"
        " select run.id, h.status from run,"
        " (values (1, 'PENDING'), (2, 'QUEUED')) h (n, status) order by h.n),"
        f" execution as (select {engine_sql(schema).add_job_call} from run)"
    )
    task_insert = (
        f"insert into {s}.tasks (run_id, idempotency_key, display_key, name, icon,"
        " description, status, noop, params, properties, style, operation, parent_id,"
        " parallel, delay_until, error, output, started_at, completed_at)"
        " select %(run_id)s, %(key)s, %(display_key)s, %(name)s, %(icon)s, %(description)s,"
        " %(status)s, %(noop)s, %(params)s, %(properties)s, %(style)s, %(operation)s,"
        " %(parent_id)s, %(parallel)s, %(delay_until)s, %(error)s, %(output)s, now(),"
        " case when %(status)s in ('COMPLETED', 'CANCELED', 'ERRORED') then now() end"
    )
    # a parent from another run is refused, as if there were none
    parent_of_run = (
        " (%(parent_id)s::text is null or exists (select 1 from"
        f" {s}.tasks p where p.id = %(parent_id)s and p.run_id = %(run_id)s))"
    )
    task_conflict = f" on conflict (run_id, idempotency_key) do nothing returning {_TASK_COLUMNS}"
    run_context_columns = (
        f"{_RUN_COLUMNS}, r.environment_id, ev.id as event_record_id,"
        " ev.name as event_name, ev.payload as event_payload,"
        ' ev.context as event_context, ev."timestamp" as event_timestamp,'
        " ev.deliver_at as event_deliver_at, ev.delivered_at as event_delivered_at,"
        " en.url as endpoint_url, en.slug as endpoint_slug,"
        " e.slug as environment_slug, e.type as environment_type, e.api_key,"
        " p.id as project_id, p.slug as project_slug, p.name as project_name,"
        " o.id as organization_id, o.slug as organization_slug, o.title as organization_title,"
        " r.yielded_executions"
    )
    run_context = (
        f"select {run_context_columns}"
        f" {run_from} join {s}.endpoints en on en.id = r.endpoint_id"
        f" join {s}.runtime_environments e on e.id = r.environment_id"
        f" join {s}.projects p on p.id = e.project_id"
        f" join {s}.organizations o on o.id = e.organization_id"
        " where r.id = %s"
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
        find_environment_by_slugs=(
            f"select {_ENVIRONMENT_COLUMNS} {environment_from}"
            " where o.slug = %s and p.slug = %s and e.slug = %s"
        ),
        insert_environment=(
            f"insert into {s}.runtime_environments"
            " (project_id, organization_id, slug, type, api_key, api_key_sha256)"
            " values (%s, %s, %s, %s, %s, %s) on conflict (project_id, slug) do nothing"
        ),
        environment_by_key_hash=(
            f"select {_ENVIRONMENT_COLUMNS} {environment_from} where e.api_key_sha256 = %s"
        ),
        environment_by_retired_key_hash=(
            f"select {_ENVIRONMENT_COLUMNS} {environment_from}"
            f" join {s}.retired_api_keys k on k.environment_id = e.id"
            " where k.api_key_sha256 = %s and k.expires_at > now()"
        ),
        environment_by_id=f"select {_ENVIRONMENT_COLUMNS} {environment_from} where e.id = %s",
        lock_environment=(
            f"select api_key_sha256 from {s}.runtime_environments where id = %s for update"
        ),
        retire_api_key=(
            f"insert into {s}.retired_api_keys (api_key_sha256, environment_id, expires_at)"
            " values (%(hash)s, %(id)s, now() + make_interval(secs => %(grace)s))"
            " returning expires_at"
        ),
        set_api_key=(
            f"update {s}.runtime_environments set api_key = %s, api_key_sha256 = %s where id = %s"
        ),
        drop_retired_keys=f"delete from {s}.retired_api_keys where environment_id = %s",
        upsert_endpoint=(
            f"insert into {s}.endpoints (environment_id, slug, url) values (%s, %s, %s)"
            " on conflict (environment_id, slug) do update set url = excluded.url,"
            f" updated_at = now() returning {_ENDPOINT_COLUMNS}"
        ),
        endpoint_by_id=f"select {_ENDPOINT_COLUMNS} from {s}.endpoints where id = %s",
        list_endpoints=(
            f"select {_ENDPOINT_COLUMNS} from {s}.endpoints where environment_id = %s order by slug"
        ),
        mark_endpoint_indexed=(
            f"update {s}.endpoints set indexed_at = now(), updated_at = now() where id = %s"
        ),
        upsert_job=(
            f"insert into {s}.job_definitions (project_id, slug, title) values (%s, %s, %s)"
            " on conflict (project_id, slug) do update set title = excluded.title returning id"
        ),
        upsert_job_version=(
            f"insert into {s}.job_versions (job_id, environment_id, endpoint_id, version,"
            " event_names, event_source, event_filter, enabled, metadata)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " on conflict (job_id, environment_id, version) do update set"
            " endpoint_id = excluded.endpoint_id, event_names = excluded.event_names,"
            " event_source = excluded.event_source, event_filter = excluded.event_filter,"
            " enabled = excluded.enabled, metadata = excluded.metadata,"
            " registered_at = now() returning id"
        ),
        job_exists=f"select id from {s}.job_definitions where project_id = %s and slug = %s",
        runs_of_job=(
            "select r.id, r.status, r.started_at, r.updated_at, r.completed_at"
            f" from {s}.job_runs r"
            " where r.job_id = %(job_id)s and r.environment_id = %(environment_id)s"
            " and (%(cursor)s::text is null or (r.created_at, r.id) < ("
            f"   select c.created_at, c.id from {s}.job_runs c where c.id = %(cursor)s))"
            " order by r.created_at desc, r.id desc limit %(limit)s"
        ),
        latest_job_version=latest_version,
        version_by_id=(
            f"select {_VERSION_COLUMNS}"
            f" from {s}.job_versions v join {s}.job_definitions j on j.id = v.job_id"
            " where v.id = %s"
        ),
        # The latest version of each job in the environment, if enabled and listening to
        # this event.
        matching_versions=(
            f"select {_VERSION_COLUMNS} from (select distinct on (job_id) * from {s}.job_versions"
            " where environment_id = %s order by job_id, registered_at desc) v"
            f" join {s}.job_definitions j on j.id = v.job_id"
            " where v.enabled and v.event_source = %s and %s = any(v.event_names)"
            # scheduled and invoked jobs run only on their schedule or when invoked
            " and coalesce(v.metadata->'trigger'->>'type', 'static') = 'static'"
            " order by v.job_id"
        ),
        insert_event=(
            f"insert into {s}.event_records (environment_id, event_id, name, source, payload,"
            ' context, is_test, "timestamp", deliver_at)'
            " values (%s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()),"
            " coalesce(%s, now() + make_interval(secs => %s), now()))"
            f" on conflict (environment_id, event_id) do nothing returning {_EVENT_COLUMNS}"
        ),
        event_by_event_id=(
            f"select {_EVENT_COLUMNS} from {s}.event_records"
            " where environment_id = %s and event_id = %s"
        ),
        lock_event=f"select {_EVENT_COLUMNS} from {s}.event_records where id = %s for update",
        lock_event_by_event_id=(
            f"select {_EVENT_COLUMNS} from {s}.event_records"
            " where environment_id = %s and event_id = %s for update"
        ),
        mark_event_delivered=(f"update {s}.event_records set delivered_at = now() where id = %s"),
        cancel_event=(
            f"update {s}.event_records set cancelled_at = now() where id = %s"
            f" returning {_EVENT_COLUMNS}"
        ),
        lock_idempotency_key="select pg_advisory_xact_lock(hashtextextended(%s, 0))",
        run_by_idempotency_key=(
            f"select r.id, ev.event_id, r.status, j.slug as job_slug {run_from}"
            " where r.environment_id = %s and r.idempotency_key = %s"
        ),
        # A run is created PENDING and queued in one statement with its execution job (the
        # parameters of `WorkerQueue.add_job_call`), both statuses kept as history (in that
        # order: the history's ids are its order). Its number is assigned when the
        # transaction commits (`_number_run`).
        create_run=(
            f"with run as (insert into {s}.job_runs (id, job_id, version_id, environment_id,"
            " endpoint_id, event_id, is_test, idempotency_key, status, queued_at)"
            " values (%(run_id)s, %(job_id)s, %(version_id)s, %(environment_id)s,"
            " %(endpoint_id)s, %(event_id)s, %(is_test)s, %(idempotency_key)s, 'QUEUED', now())"
            f" returning id), {queued_run} select count(*) from execution"
        ),
        # TestJob in one statement: the job's latest version, its test event (`test:<event
        # name>:<ms>`; none if that id is taken), and the run queued as above. The answer:
        # whether the job exists, and the event's id if it was stored.
        create_test_run=(
            f"with version as ({latest_version}),"
            f" event as (insert into {s}.event_records (environment_id, event_id, name,"
            " source, payload, is_test) select %(environment_id)s,"
            " 'test:' || event_name || ':' || %(millis)s, event_name, event_source,"
            " %(event_payload)s, true from version"
            " on conflict (environment_id, event_id) do nothing returning id, event_id),"
            f" run as (insert into {s}.job_runs (id, job_id, version_id, environment_id,"
            " endpoint_id, event_id, is_test, status, queued_at)"
            " select %(run_id)s, version.job_id, version.version_id, %(environment_id)s,"
            " version.endpoint_id, event.id, true, 'QUEUED', now() from version, event"
            f" returning id), {queued_run}"
            " select exists (select from version), (select event_id from event),"
            " (select count(*) from execution)"
        ),
        run_for_event=(f"select id from {s}.job_runs where event_id = %s and version_id = %s"),
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
        record_status=(
            f"insert into {s}.run_status_history (run_id, status, detail) values (%s, %s, %s)"
        ),
        get_run=f"select {_RUN_COLUMNS} {run_from} where r.id = %s and r.environment_id = %s",
        lock_run=(
            f"select status from {s}.job_runs where id = %s and environment_id = %s for update"
        ),
        run_status=f"select status from {s}.job_runs where id = %s",
        lock_run_status=f"select status from {s}.job_runs where id = %s for update",
        cancel_run=(
            f"update {s}.job_runs set status = 'CANCELED', completed_at = now(),"
            " updated_at = now() where id = %s"
        ),
        run_statuses=(
            f"select status, detail, at from {s}.run_status_history where run_id = %s order by id"
        ),
        # Everything an execution request or a run notification needs, in one row.
        run_context=run_context,
        lock_run_context=run_context + " for update of r",
        # EXECUTING, counted and kept as history, answering the run's context as it now is:
        # one statement, for a run that is open and has executions left (none otherwise).
        begin_execution=(
            f"with begun as (update {s}.job_runs r set status = 'EXECUTING',"
            " updated_at = now(), started_at = coalesce(r.started_at, now()),"
            f" execution_count = r.execution_count + 1 from {s}.job_definitions j,"
            f" {s}.job_versions v, {s}.event_records ev, {s}.endpoints en,"
            f" {s}.runtime_environments e, {s}.projects p, {s}.organizations o"
            " where r.id = %(id)s and r.status <> all(%(terminal)s)"
            " and r.execution_count < %(max_executions)s and j.id = r.job_id"
            " and v.id = r.version_id and ev.id = r.event_id and en.id = r.endpoint_id"
            " and e.id = r.environment_id and p.id = e.project_id and o.id = e.organization_id"
            f" returning {run_context_columns}),"
            f" history as (insert into {s}.run_status_history (run_id, status)"
            " select id, 'EXECUTING' from begun)"
            " select * from begun"
        ),
        # Only an executing run takes a result: a run cancelled meanwhile keeps CANCELED. The
        # status is kept as history, a run that ends closes its open tasks, and one whose
        # outcome has subscribers still to hear of it gets its runFinished job (the
        # parameters of `WorkerQueue.add_job_call`).
        finish_execution=(
            f"with finished as (update {s}.job_runs set status = %(status)s,"
            " output = %(output)s, completed_at = case when %(terminal)s then now() end,"
            " execution_duration_ms = execution_duration_ms + %(duration_ms)s,"
            " updated_at = now() where id = %(id)s and status = 'EXECUTING' returning id),"
            f" history as (insert into {s}.run_status_history (run_id, status, detail)"
            " select id, %(status)s, %(output)s from finished),"
            f" closed as (update {s}.tasks set status = %(closed)s, completed_at = now()"
            f" where %(terminal)s and run_id = %(id)s and {open_task}"
            " and exists (select from finished)),"
            f" announced as (select {engine_sql(schema).add_job_call} from finished"
            f" where %(terminal)s and exists (select from {s}.run_subscriptions"
            " where run_id = %(id)s and event = %(event)s and delivered_at is null))"
            " select count(*) from announced"
        ),
        finish_execution_early=(
            f"update {s}.job_runs set status = %(status)s, output = %(output)s,"
            " completed_at = now(), updated_at = now() where id = %(id)s"
        ),
        # Unfinished runs whose execution job is gone or permanently failed: FAILURE.
        fail_stalled_runs=(
            f"update {s}.job_runs r set status = 'FAILURE', completed_at = now(),"
            " updated_at = now()"
            " where r.status in ('QUEUED', 'EXECUTING', 'WAITING_TO_EXECUTE')"
            " and r.updated_at < now() - interval '1 minute'"
            f" and not exists (select 1 from {s}._jobs j"
            " where j.key = 'performRunExecution:' || r.id"
            " and (j.locked_at is not null or j.attempts < j.max_attempts))"
            " returning r.id, coalesce((select j.last_error from"
            f" {s}._jobs j where j.key = 'performRunExecution:' || r.id),"
            " 'its execution job no longer exists') as last_error"
        ),
        set_run_output=f"update {s}.job_runs set output = %s where id = %s",
        # Creating a task shares the run's lock with other creations, so a cancel (which
        # takes it for update) sees every task created before it.
        run_for_task=(
            f"select status from {s}.job_runs where id = %s and environment_id = %s for share"
        ),
        insert_task=task_insert + " where" + parent_of_run + task_conflict,
        # The common case in one statement: a new task of an open run of the environment,
        # under the run's share lock (nothing when the run is over or not the environment's,
        # the key is taken, or the parent is another run's: the caller looks closer).
        insert_task_of_open_run=(
            f"with run as (select id from {s}.job_runs where id = %(run_id)s"
            " and environment_id = %(environment_id)s and status <> all(%(terminal)s)"
            f" for share) {task_insert} from run where{parent_of_run}{task_conflict}"
        ),
        task_by_key=(
            f"select {_TASK_COLUMNS} from {s}.tasks where run_id = %s and idempotency_key = %s"
        ),
        # A task cancelled with its run starts again if the run is re-executed (trigger.dev).
        restart_task=(
            f"update {s}.tasks set status = %(status)s, started_at = now(),"
            " completed_at = case when %(status)s = 'COMPLETED' then now() end"
            f" where id = %(id)s returning {_TASK_COLUMNS}"
        ),
        lock_task=f"select {_TASK_COLUMNS} from {s}.tasks where id = %s for update",
        lock_task_of_run=(
            f"select {_TASK_COLUMNS} from {s}.tasks t where t.id = %s and t.run_id = %s"
            f" and exists (select 1 from {s}.job_runs r where r.id = t.run_id"
            " and r.environment_id = %s) for update of t"
        ),
        complete_task=(
            f"update {s}.tasks set status = 'COMPLETED', output = %(output)s,"
            " output_properties = coalesce(%(properties)s, output_properties),"
            " completed_at = now() where id = %(id)s and run_id = %(run_id)s"
            " and status not in ('COMPLETED', 'ERRORED', 'CANCELED')"
            # the environment's run only, when the API asks
            " and (%(environment_id)s::text is null or exists (select 1 from"
            f" {s}.job_runs r where r.id = %(run_id)s and r.environment_id = %(environment_id)s))"
            f" returning {_TASK_COLUMNS}"
        ),
        fail_task=(
            f"update {s}.tasks set status = 'ERRORED', output = %(output)s,"
            " error = %(output)s->>'message', completed_at = now()"
            " where id = %(id)s and run_id = %(run_id)s"
            f" and status not in ('COMPLETED', 'ERRORED', 'CANCELED') returning {_TASK_COLUMNS}"
        ),
        task_of_run=f"select {_TASK_COLUMNS} from {s}.tasks where id = %s and run_id = %s",
        task_by_id=f"select {_TASK_COLUMNS} from {s}.tasks where id = %s",
        failed_task_of_run=(
            f"select {_TASK_COLUMNS} from {s}.tasks where run_id = %s and status = 'ERRORED'"
            " order by position desc limit 1"
        ),
        # The attempt failed: the task waits for its next one (attempts counts them all).
        retry_task=(
            f"update {s}.tasks set status = 'WAITING', attempts = attempts + 1,"
            " retry_at = %(retry_at)s, error = %(error)s"
            " where id = %(id)s and run_id = %(run_id)s"
            " and status not in ('COMPLETED', 'ERRORED', 'CANCELED') returning id"
        ),
        set_task_output_properties=(
            f"update {s}.tasks set output_properties = %s where id = %s and run_id = %s"
        ),
        start_waiting_task=(
            f"update {s}.tasks set status = case when noop then 'COMPLETED' else 'RUNNING' end,"
            " completed_at = case when noop then now() end"
            f" where id = %s and status = 'WAITING' returning {_TASK_COLUMNS}"
        ),
        # A parallel parent's other children that something will still finish: a wait, a
        # retry, an operation.
        waiting_siblings=(
            f"select count(*) from {s}.tasks where parent_id = %s and id <> %s"
            " and (status in ('PENDING', 'WAITING')"
            " or (status = 'RUNNING' and operation is not null))"
        ),
        completed_noop_keys=(
            f"select idempotency_key from {s}.tasks"
            " where run_id = %s and status = 'COMPLETED' and noop"
        ),
        completed_tasks=(
            f"select {_CACHED_TASK_COLUMNS} from {s}.tasks"
            " where run_id = %s and status = 'COMPLETED' and not noop order by position"
        ),
        completed_tasks_from=(
            f"select {_CACHED_TASK_COLUMNS} from {s}.tasks"
            " where run_id = %(run_id)s and status = 'COMPLETED' and not noop"
            f" and position >= (select position from {s}.tasks"
            " where id = %(cursor)s and run_id = %(run_id)s)"
            " order by position limit %(limit)s"
        ),
        close_open_tasks=(
            f"update {s}.tasks set status = %s, completed_at = now()"
            f" where run_id = %s and {open_task}"
        ),
        run_tasks=(
            "select id, parent_id, display_key, status, name, icon, started_at, completed_at"
            f" from {s}.tasks where run_id = %s order by position"
        ),
        add_yielded_execution=(
            f"update {s}.job_runs set yielded_executions = array_append(yielded_executions, %s)"
            " where id = %s returning cardinality(yielded_executions)"
        ),
        upsert_io_status=(
            f"insert into {s}.run_io_statuses as t (run_id, key, label, state, data, history)"
            " values (%(run_id)s, %(key)s, coalesce(%(label)s, %(key)s), %(state)s, %(data)s,"
            " jsonb_build_array(%(update)s::jsonb))"
            " on conflict (run_id, key) do update set label = coalesce(%(label)s, t.label),"
            " state = coalesce(%(state)s, t.state), data = coalesce(%(data)s, t.data),"
            " history = t.history || jsonb_build_array(%(update)s::jsonb), updated_at = now()"
            " returning key, label, state, data, history"
        ),
        run_io_statuses=(
            f"select key, label, state, data, history from {s}.run_io_statuses"
            " where run_id = %s order by position"
        ),
        get_value=(f"select key, value from {s}.key_values where environment_id = %s and key = %s"),
        set_value=(
            f"insert into {s}.key_values (environment_id, key, value) values (%s, %s, %s)"
            " on conflict (environment_id, key) do update set value = excluded.value,"
            " updated_at = now()"
        ),
        delete_value=(
            f"delete from {s}.key_values where environment_id = %s and key = %s returning key"
        ),
        upsert_schedule=(
            f"insert into {s}.schedules (version_id, kind, expression) values (%s, %s, %s)"
            " on conflict (version_id) do update set kind = excluded.kind,"
            " expression = excluded.expression, active = true, updated_at = now() returning id"
        ),
        # The job's latest version is the one that fires.
        stop_other_schedules=(
            f"update {s}.schedules s set active = false, updated_at = now()"
            f" from {s}.job_versions v where v.id = s.version_id and s.active"
            " and v.job_id = %s and v.environment_id = %s and v.id <> %s"
        ),
        stop_schedule=(
            f"update {s}.schedules set active = false, updated_at = now()"
            " where version_id = %s and active"
        ),
        # Jobs an endpoint no longer lists stop firing.
        stop_unlisted_schedules=(
            f"update {s}.schedules s set active = false, updated_at = now()"
            f" from {s}.job_versions v join {s}.job_definitions j on j.id = v.job_id"
            " where v.id = s.version_id and s.active and v.endpoint_id = %s"
            " and not (j.slug = any(%s))"
        ),
        lock_schedule=(
            "select id, kind, expression, active, last_tick, version_id"
            f" from {s}.schedules where id = %s for update"
        ),
        schedule_of_version=(
            "select id, kind, expression, active, last_tick, version_id"
            f" from {s}.schedules where version_id = %s for update"
        ),
        set_last_tick=f"update {s}.schedules set last_tick = %s where id = %s",
        # A tick job that will still run (queued, running, or with attempts left).
        tick_pending=(
            f"select exists (select 1 from {s}._jobs where key = %s"
            " and (locked_at is not null or attempts < max_attempts))"
        ),
        insert_subscription=(
            f"insert into {s}.run_subscriptions (run_id, url, event, recipient_method)"
            " values (%s, %s, %s, %s) on conflict do nothing"
        ),
        pending_subscriptions=(
            f"select id from {s}.run_subscriptions"
            " where run_id = %s and event = %s and delivered_at is null order by id"
        ),
        subscription=(
            "select id, run_id, url, event, recipient_method, delivered_at"
            f" from {s}.run_subscriptions where id = %s"
        ),
        mark_subscription_delivered=(
            f"update {s}.run_subscriptions set delivered_at = now()"
            " where id = %s and delivered_at is null"
        ),
    )
