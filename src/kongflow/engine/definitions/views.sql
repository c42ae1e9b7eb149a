-- The public views over the job tables; the functions that return their rows depend on them.

-- graphile-worker's public columns, in its order, then kongflow's own.
create or replace view :SCHEMA.jobs as
  select
    j.id, q.queue_name, j.task_identifier, j.payload, j.priority, j.run_at, j.attempts,
    j.max_attempts, j.last_error, j.created_at, j.updated_at, j.key, j.locked_at, j.locked_by,
    j.revision, j.flags,
    case
      when j.locked_at is not null then 'running'
      when j.attempts >= j.max_attempts then 'failed'
      when j.pending_deps > 0 then 'blocked'
      when j.run_at > now() then 'scheduled'
      else 'available'
    end as state,
    j.errors, j.cancel_requested_at, null::timestamptz as finished_at, null::json as result,
    j.headers
  from :SCHEMA._jobs j
  left join :SCHEMA._job_queues q on q.id = j.queue_id;

-- Every job, hot or finished, in the shape of the public view.
create or replace view :SCHEMA._all_jobs as
  select * from :SCHEMA.jobs
  union all
  select
    f.id, f.queue_name, f.task_identifier, f.payload, f.priority, f.run_at, f.attempts,
    f.max_attempts, f.last_error, f.created_at, f.finished_at, f.key, null, null,
    f.revision, f.flags, f.state, f.errors, null, f.finished_at, f.result, null
  from :SCHEMA._finished_jobs f;

-- Per-queue figures for the dashboard, metrics and `kongflow queues` (null queue_name = jobs with
-- no queue).
create or replace view :SCHEMA.queue_stats as
  select
    q.queue_name,
    count(*) filter (where j.state = 'available') as available,
    count(*) filter (where j.state = 'scheduled') as scheduled,
    count(*) filter (where j.state = 'running') as running,
    count(*) filter (where j.state = 'failed') as failed,
    min(j.run_at) filter (where j.state = 'available') as oldest_available_at,
    q.max_running,
    coalesce(q.paused, false) as paused,
    q.rate_max,
    q.rate_per
  from :SCHEMA.jobs j
  full join :SCHEMA._job_queues q on q.queue_name = j.queue_name
  group by q.queue_name, q.max_running, q.paused, q.rate_max, q.rate_per;
