-- Prompt recovery of lost jobs, a heartbeat that reconciles what a worker holds, and workers that
-- record their queue scope.

-- The queues a worker serves, as LIKE patterns (null: every queue and jobs with no queue); with
-- `tasks`, what `unhandled_tasks` compares ready jobs against.
alter table :SCHEMA._workers add column queues text[];

-- Releases running jobs whose worker lost them (p_type: WorkerLost for a worker gone silent or
-- force-unlocked, ClaimLost for a claim its worker never received). The attempt counts, so a job
-- that kills every worker that takes it still runs out of attempts; but it keeps its run_at, so
-- it is ready at once and ahead of every later job of its priority instead of behind the whole
-- backlog. A job with a cancel requested is finished as cancelled. Their queue slots free up
-- with them, and idle workers are woken.
drop function :SCHEMA._release_lost_jobs(bigint[], text);
create function :SCHEMA._release_lost_jobs(
  p_ids bigint[], p_message text, p_type text default 'WorkerLost'
) returns bigint[]
language plpgsql volatile as $$
declare
  v_cancelled bigint[];
  v_released bigint[];
  v_ready int;
begin
  v_cancelled := array(
    select j.id from :SCHEMA._jobs j
     where j.id = any(p_ids) and j.cancel_requested_at is not null);
  update :SCHEMA._jobs set locked_at = null, locked_by = null where id = any(v_cancelled);
  perform :SCHEMA._finish_jobs(v_cancelled, 'cancelled');

  with released as (
    update :SCHEMA._jobs as j set
      last_error = p_message,
      errors = :SCHEMA._append_error(j.errors, jsonb_build_object(
        'at', now(), 'attempt', j.attempts, 'worker', j.locked_by, 'type', p_type,
        'message', p_message)),
      locked_at = null,
      locked_by = null,
      updated_at = now()
    where j.id = any(p_ids) and j.locked_at is not null and j.cancel_requested_at is null
    returning j.id, j.is_available and j.run_at <= now() as ready_now
  )
  select coalesce(array_agg(id), '{}'), count(*) filter (where ready_now)
    into v_released, v_ready
    from released;
  if v_ready > 0 or cardinality(v_cancelled) > 0 then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  return v_cancelled || v_released;
end
$$;

-- A worker's heartbeat. p_held: the jobs it is running or still has results of. A job locked by
-- this worker for longer than p_grace that it does not hold was claimed for it but never reached
-- it (the claim committed and its reply was lost): it is released like a lost worker's job.
-- Returns whether the worker is registered (if not, nothing else is done: it must register
-- again), the released jobs, and its running jobs that were asked to stop.
create function :SCHEMA._heartbeat(p_worker text, p_held bigint[], p_grace interval)
returns table (registered boolean, released bigint[], cancel_requested bigint[])
language plpgsql volatile as $$
declare
  v_released bigint[];
begin
  update :SCHEMA._workers w set heartbeat_at = now() where w.id = p_worker;
  if not found then
    return query select false, '{}'::bigint[], '{}'::bigint[];
    return;
  end if;
  v_released := :SCHEMA._release_lost_jobs(
    array(select j.id from :SCHEMA._jobs j
           where j.locked_at is not null and j.locked_by = p_worker
             and j.locked_at < now() - p_grace and j.id <> all(coalesce(p_held, '{}'))
           for update of j skip locked),
    format('claimed by worker %s but never started there (the claim''s reply was lost)',
           p_worker),
    'ClaimLost');
  return query select true, v_released, array(
    select j.id from :SCHEMA._jobs j
     where j.locked_at is not null and j.locked_by = p_worker
       and j.cancel_requested_at is not null);
end
$$;

-- Ready jobs that no live worker (registered, heartbeat within its lease) takes: their task is
-- in no such worker's task list, or no such worker serves their queue. One row per task, with
-- the queues of those jobs.
create function :SCHEMA.unhandled_tasks()
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
