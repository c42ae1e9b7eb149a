"""The SQL the engine's Python side sends, in one place. Everything else lives in the schema's
functions (see migrations/); these statements only call them or read the views."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from kongflow.engine.migrate import channels
from kongflow.settings import validate_schema


@dataclass(frozen=True)
class EngineSQL:
    add_job: str
    add_job_call: str
    add_jobs: str
    add_jobs_counted: str
    now: str
    lock_queues: str
    queue_names: str
    copy_jobs: str
    copy_jobs_at: str
    notify_jobs: str
    remove_job: str
    complete_jobs: str
    permanently_fail_jobs: str
    reschedule_jobs: str
    get_job: str
    get_job_any: str
    cancel_job: str
    register_worker: str
    heartbeat: str
    deregister_worker: str
    claim_jobs: str
    settle_jobs: str
    has_ready_jobs: str
    unknown_tasks: str
    unhandled_tasks: str
    queue_known: str
    rescue_stale_jobs: str
    force_unlock_workers: str
    set_queue_limits: str
    set_rate_limits: str
    pause_queue: str
    resume_queue: str
    register_crontabs: str
    describe_crontabs: str
    schedule_cron: str
    acquire_lease: str
    release_lease: str
    cleanup_jobs: str
    gc_job_queues: str
    queue_stats: str
    retry_job: str
    delete_jobs: str
    list_jobs: str
    register_wait: str
    add_workflow: str
    workflow_jobs: str
    dependency_results: str
    unregister_wait: str


@cache
def engine_sql(schema: str) -> EngineSQL:
    """The statements for one schema (the name is validated, then quoted into the text)."""
    s = f'"{validate_schema(schema)}"'
    add_job_call = (
        f"{s}.add_job("
        "identifier => %(identifier)s, payload => %(payload)s::json,"
        " queue_name => %(queue_name)s, run_at => %(run_at)s::timestamptz,"
        " max_attempts => %(max_attempts)s::int, job_key => %(job_key)s,"
        " priority => %(priority)s::int, flags => %(flags)s::text[],"
        " job_key_mode => %(job_key_mode)s, headers => %(headers)s::jsonb)"
    )
    add_jobs_call = (
        f"{s}.add_jobs("
        f"array(select r from json_populate_recordset(null::{s}.job_spec, %s::json) r), %s)"
    )
    return EngineSQL(
        add_job=f"select * from {add_job_call}",
        # add_job as an expression, for a statement of one's own (`ClientBase.add_job_call`)
        add_job_call=add_job_call,
        add_jobs=f"select * from {add_jobs_call}",
        now="select now()",
        lock_queues=f"select {s}._lock_queues(%s)",
        queue_names=f"select id, queue_name from {s}._job_queues where id = any(%s)",
        copy_jobs=(
            f"copy {s}._jobs (queue_id, task_identifier, payload, max_attempts, priority, flags)"
            " from stdin"
        ),
        copy_jobs_at=(
            f"copy {s}._jobs (queue_id, task_identifier, payload, max_attempts, priority, flags,"
            " run_at) from stdin"
        ),
        notify_jobs=f"select pg_notify('{channels(schema)['jobs']}', '')",
        add_jobs_counted=(
            f"select j.task_identifier, j.queue_name, count(*) from {add_jobs_call} j group by 1, 2"
        ),
        remove_job=f"select * from {s}.remove_job(%s) where id is not null",
        complete_jobs=f"select * from {s}.complete_jobs(%s::bigint[])",
        permanently_fail_jobs=f"select * from {s}.permanently_fail_jobs(%s::bigint[], %s)",
        reschedule_jobs=(
            f"select * from {s}.reschedule_jobs(%(ids)s::bigint[], %(run_at)s::timestamptz,"
            " %(priority)s::int, %(attempts)s::int, %(max_attempts)s::int)"
        ),
        get_job=f"select * from {s}._all_jobs where id = %s",
        get_job_any=f"select * from {s}._all_jobs where id = any(%s::bigint[])",
        cancel_job=f"select * from {s}.cancel_job(%s) where id is not null",
        # A worker registers again under the same id when its row is gone (see Worker): the row
        # may be back already if two of its parts noticed at once.
        register_worker=(
            f"insert into {s}._workers (id, hostname, pid, tasks, concurrency, lease, queues)"
            " values (%s, %s, %s, %s, %s, %s, %s) on conflict (id) do nothing"
        ),
        heartbeat=f"select * from {s}._heartbeat(%s, %s::bigint[], %s::interval)",
        deregister_worker=f"delete from {s}._workers where id = %s",
        claim_jobs=f"select * from {s}._claim_jobs(%s, %s, %s, %s, %s)",
        settle_jobs=f"select {s}._settle_jobs(%s, %s::jsonb, %s)",
        has_ready_jobs=(
            f"select exists (select 1 from {s}._jobs j"
            f" left join {s}._job_queues q on q.id = j.queue_id"
            " where j.is_available and j.run_at <= now() and (q.id is null or not q.paused)"
            f" and {s}._claimable(j, %(tasks)s, %(forbidden)s)"
            " and (%(queues)s::text[] is null or q.queue_name like any(%(queues)s::text[])))"
        ),
        # Task identifiers of ready jobs a worker has no handler for, among the next jobs in claim
        # order (the first 1000 with no queue, the first 100 of each queue it serves): a look
        # along the ready indexes, cheap enough to repeat, where a job nobody takes ends up.
        unknown_tasks=(
            "select distinct t.task_identifier from ("
            f" (select j.task_identifier from {s}._jobs j"
            "   where %(queues)s::text[] is null and j.queue_id is null and j.is_available"
            "     and j.run_at <= now()"
            "   order by j.priority, j.run_at, j.id limit 1000)"
            " union all"
            f" (select top.task_identifier from {s}._job_queues q"
            "   cross join lateral ("
            f"    select j.task_identifier from {s}._jobs j"
            "     where j.queue_id = q.id and j.is_available and j.run_at <= now()"
            "     order by j.priority, j.run_at, j.id limit 100) top"
            "   where %(queues)s::text[] is null or q.queue_name like any(%(queues)s::text[]))"
            ") t where t.task_identifier <> all(%(tasks)s::text[]) order by 1"
        ),
        unhandled_tasks=f"select * from {s}.unhandled_tasks()",
        # A queue is known if it has a row (it has or recently had jobs, or was paused) or a
        # limit policy matches its name, exactly or by pattern.
        queue_known=(
            f"select exists (select 1 from {s}._job_queues where queue_name = %(name)s)"
            f" or exists (select 1 from {s}._queue_policies p where p.pattern = %(name)s"
            "  or (strpos(p.pattern, '*') > 0 and %(name)s like replace(replace(replace(replace("
            "      p.pattern, '\\', '\\\\'), '%%', '\\%%'), '_', '\\_'), '*', '%%')))"
        ),
        rescue_stale_jobs=f"select {s}.rescue_stale_jobs()",
        force_unlock_workers=f"select {s}.force_unlock_workers(%s::text[])",
        set_queue_limits=f"select {s}.set_queue_limits(%s::jsonb)",
        set_rate_limits=f"select {s}.set_rate_limits(%s::jsonb)",
        pause_queue=f"select {s}.pause_queue(%s)",
        resume_queue=f"select {s}.resume_queue(%s)",
        register_crontabs=f"select * from {s}._register_crontabs(%s::text[], %s)",
        describe_crontabs=f"select {s}._describe_crontabs(%s::jsonb)",
        schedule_cron=f"select {s}._schedule_cron(%s::jsonb)",
        acquire_lease=f"select {s}._acquire_lease(%s, %s, %s::interval)",
        release_lease=f"select {s}._release_lease(%s, %s)",
        cleanup_jobs=f"select * from {s}.cleanup_jobs(%s::interval, %s::interval, %s)",
        gc_job_queues=f"select {s}.gc_job_queues()",
        queue_stats=f"select * from {s}.queue_stats order by queue_name nulls first",
        retry_job=f"select * from {s}.retry_job(%s) where id is not null",
        delete_jobs=f"select {s}.delete_jobs(%s::bigint[])",
        list_jobs=(
            f"select * from {s}._all_jobs"
            " where (%(state)s::text is null or state = %(state)s)"
            " and (%(task)s::text is null or task_identifier = %(task)s)"
            " and (%(queue)s::text is null or queue_name = %(queue)s)"
            " order by id desc limit %(limit)s"
        ),
        register_wait=f"select {s}._register_wait(%s)",
        add_workflow=(
            f"select w.workflow_id, w.step, (w.job).* from {s}.add_workflow(%s::jsonb) w"
        ),
        workflow_jobs=(
            f"select s.workflow_id, s.step, a.* from {s}._workflow_steps s"
            f" join {s}._all_jobs a on a.id = s.job_id where s.workflow_id = %s order by a.id"
        ),
        # What the jobs a job depends on returned: by step name within its workflow, else by id.
        dependency_results=(
            f"select coalesce(s.step, d.depends_on::text), f.result from {s}._job_deps d"
            f" join {s}._finished_jobs f on f.id = d.depends_on and f.state = 'completed'"
            f" left join {s}._workflow_steps s on s.job_id = d.depends_on"
            " where d.job_id = %s order by d.depends_on"
        ),
        unregister_wait=f"delete from {s}._result_waits where id = %s returning id",
    )
