-- Administration of jobs (graphile-worker's API and kongflow's own) and inspection.

-- Marks jobs that are not running as completed (graphile-worker's complete_jobs).
create or replace function :SCHEMA.complete_jobs(job_ids bigint[]) returns setof :SCHEMA._all_jobs
language plpgsql volatile as $$
declare
  v_ids bigint[] := :SCHEMA._finish_jobs(job_ids, 'completed');
begin
  return query select a.* from :SCHEMA._all_jobs a where a.id = any(v_ids) order by a.id;
end
$$;

create or replace function :SCHEMA.permanently_fail_jobs(job_ids bigint[], error_message text default null)
returns setof :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_message text := coalesce(error_message, 'Manually marked as failed');
  v_ids bigint[];
begin
  with failed as (
    update :SCHEMA._jobs as j set
      last_error = v_message,
      errors = coalesce(j.errors, '[]') || jsonb_build_object(
        'at', now(), 'attempt', j.attempts, 'type', 'PermanentlyFailed', 'message', v_message),
      attempts = j.max_attempts,
      updated_at = now()
    where j.id = any(job_ids) and j.locked_at is null
    returning j.id
  )
  select coalesce(array_agg(id), '{}') into v_ids from failed;
  perform :SCHEMA._settled('{}', v_ids);
  return query select * from :SCHEMA.jobs j where j.id = any(v_ids) order by j.id;
end
$$;

create or replace function :SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null,
  priority int default null,
  attempts int default null,
  max_attempts int default null
) returns setof :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_ids bigint[];
begin
  if max_attempts is not null and (max_attempts < 1 or max_attempts > 32767) then
    raise exception 'reschedule_jobs: max_attempts must be between 1 and 32767, got %',
      max_attempts using errcode = '22023';
  end if;
  if attempts is not null and (attempts < 0 or attempts > 32767) then
    raise exception 'reschedule_jobs: attempts must be between 0 and 32767, got %',
      attempts using errcode = '22023';
  end if;
  with moved as (
    update :SCHEMA._jobs as j set
      run_at = case when j.pending_deps > 0 then j.run_at  -- blocked: released by its deps
                    else coalesce(reschedule_jobs.run_at, j.run_at) end,
      priority = coalesce(reschedule_jobs.priority, j.priority),
      attempts = coalesce(reschedule_jobs.attempts, j.attempts),
      retry_stopped = j.retry_stopped and reschedule_jobs.attempts is null,
      max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts),
      updated_at = now()
    where j.id = any(job_ids) and j.locked_at is null
    returning j.id
  )
  select coalesce(array_agg(id), '{}') into v_ids from moved;
  if exists (select 1 from :SCHEMA.jobs j
              where j.id = any(v_ids) and j.state = 'available') then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  return query select * from :SCHEMA.jobs j where j.id = any(v_ids) order by j.id;
end
$$;

-- Deletes the job with this key if it is not running; a running one loses its key and will not
-- be retried.
create or replace function :SCHEMA.remove_job(job_key text) returns :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_job :SCHEMA._jobs;
  v_out :SCHEMA.jobs;
begin
  select * into v_job from :SCHEMA._jobs j where j.key = remove_job.job_key for update;
  if v_job.id is null then
    return null;
  end if;
  if v_job.locked_at is null then
    select * into v_out from :SCHEMA.jobs j where j.id = v_job.id;
    delete from :SCHEMA._jobs j where j.id = v_job.id;
    perform :SCHEMA._settled('{}', array[v_job.id]);
  else
    update :SCHEMA._jobs as j
       set key = null, attempts = j.max_attempts, retry_stopped = true, updated_at = now()
     where j.id = v_job.id;
    select * into v_out from :SCHEMA.jobs j where j.id = v_job.id;
  end if;
  return v_out;
end
$$;

-- Cancels a job: one that is not running is finished as cancelled at once; a running one is asked
-- to stop (its worker is notified) and will not be retried.
create or replace function :SCHEMA.cancel_job(job_id bigint) returns :SCHEMA._all_jobs
language plpgsql volatile as $$
declare
  v_job :SCHEMA._jobs;
  v_out :SCHEMA._all_jobs;
begin
  select * into v_job from :SCHEMA._jobs j where j.id = cancel_job.job_id for update;
  if v_job.id is not null and v_job.locked_at is null then
    perform :SCHEMA._finish_jobs(array[v_job.id], 'cancelled');
  elsif v_job.id is not null then
    update :SCHEMA._jobs as j
       set cancel_requested_at = coalesce(j.cancel_requested_at, now()),
           attempts = j.max_attempts, retry_stopped = true, updated_at = now()
     where j.id = v_job.id;
    perform pg_notify(:CANCEL_CHANNEL, v_job.id::text);
  end if;
  select * into v_out from :SCHEMA._all_jobs a where a.id = cancel_job.job_id;
  return v_out;
end
$$;

-- Makes a job that is not running ready at once; a permanently failed one gets one more attempt.
create or replace function :SCHEMA.retry_job(job_id bigint) returns :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_out :SCHEMA.jobs;
begin
  update :SCHEMA._jobs as j set
    run_at = now(),
    max_attempts = greatest(j.max_attempts, j.attempts + 1),
    retry_stopped = false,
    updated_at = now()
  where j.id = retry_job.job_id and j.locked_at is null
    and j.pending_deps = 0;  -- a blocked job runs when its dependencies release it
  if found then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  select * into v_out from :SCHEMA.jobs j where j.id = retry_job.job_id;
  return v_out;
end
$$;

-- Deletes jobs that are not running, finished ones included; returns the deleted ids.
create or replace function :SCHEMA.delete_jobs(job_ids bigint[]) returns bigint[]
language plpgsql volatile as $$
declare
  v_ids bigint[];
begin
  with hot as (
    delete from :SCHEMA._jobs j where j.id = any(job_ids) and j.locked_at is null returning j.id
  ),
  finished as (
    delete from :SCHEMA._finished_jobs f where f.id = any(job_ids) returning f.id
  )
  select coalesce(array_agg(id order by id), '{}') into v_ids
    from (select id from hot union all select id from finished) ids;
  perform :SCHEMA._settled('{}', v_ids);  -- a deleted dependency counts as failed
  return v_ids;
end
$$;

-- Ready jobs that no live worker (registered, heartbeat within its lease) takes: their task is
-- in no such worker's task list, or no such worker serves their queue. One row per task, with
-- the queues of those jobs.
create or replace function :SCHEMA.unhandled_tasks()
returns table (task_identifier text, ready bigint, oldest_run_at timestamptz, queue_names text[])
language sql stable as $$
  with ready as (
    select j.task_identifier, q.queue_name, count(*) as n, min(j.run_at) as oldest
      from :SCHEMA._jobs j
      left join :SCHEMA._job_queues q on q.id = j.queue_id
     where j.is_available and j.run_at <= now()
     group by j.task_identifier, q.queue_name
  )
  select r.task_identifier, sum(r.n)::bigint, min(r.oldest),
         array_agg(r.queue_name order by r.queue_name nulls first)  -- null: jobs with no queue
    from ready r
   where not exists (
     select 1 from :SCHEMA._workers w
      where w.heartbeat_at >= now() - w.lease
        and r.task_identifier = any(w.tasks)
        and (w.queues is null
             or (r.queue_name is not null and r.queue_name like any(w.queues))))
   group by r.task_identifier
   order by r.task_identifier
$$;
