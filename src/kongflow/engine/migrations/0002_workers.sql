-- The worker side: registration and leases, claiming, settling results, rescue, queue control.

-- Live workers. A worker heartbeats its row; once the row is older than the lease it is deleted by
-- the rescue and the jobs it held are released. A worker id is never reused, so a result from a
-- lost worker can be told apart (fencing).
create table :SCHEMA._workers (
  id text primary key,
  hostname text not null,
  pid int not null,
  tasks text[] not null,
  concurrency int not null,
  lease interval not null,  -- this worker's own: silent for longer, it is presumed dead
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now()
);

-- Worker-side filter shared by the claim and the drain check.
create function :SCHEMA._claimable(
  p_job :SCHEMA._jobs, p_tasks text[], p_forbidden_flags text[]
) returns boolean
language sql immutable as $$
  select p_job.task_identifier = any(p_tasks)
     and (p_forbidden_flags is null or p_job.flags is null or not p_job.flags ?| p_forbidden_flags)
$$;

-- Claims up to p_limit ready jobs for a worker, in (priority, run_at, id) order, within the limits
-- of their queues.
--
-- The plan must walk the ready indexes in order and stop at the limit. Right after a bulk enqueue
-- the statistics still say the table is small, and the planner would rather read every ready job
-- and sort them (milliseconds instead of microseconds), so those plans are ruled out here.
create function :SCHEMA._claim_jobs(
  p_worker text, p_limit int, p_tasks text[], p_queues text[], p_forbidden_flags text[]
) returns setof :SCHEMA.jobs
language plpgsql volatile
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
  v_queue_ids int[];
begin
  -- A worker declared lost must not take new work under its old id.
  perform 1 from :SCHEMA._workers w where w.id = p_worker for key share;
  if not found then
    raise exception 'worker % is not registered (its lease expired)', p_worker
      using errcode = 'KF001';
  end if;

  -- 1. Lock the named queues whose next jobs come first, that have room, and that no other
  --    worker is claiming from right now; at most two per wanted job, so a claim stays small
  --    however many queues exist.
  v_queue_ids := array(
    select q.id
      from :SCHEMA._job_queues q
      cross join lateral (
        select j.priority, j.run_at, j.id from :SCHEMA._jobs j
         where j.queue_id = q.id and j.is_available and j.run_at <= now()
           and :SCHEMA._claimable(j, p_tasks, p_forbidden_flags)
         order by j.priority, j.run_at, j.id
         limit 1) top
     where not q.paused
       and (p_queues is null or q.queue_name like any(p_queues))
       and (select count(*) from :SCHEMA._jobs r
             where r.queue_id = q.id and r.locked_at is not null) < q.max_running
     order by top.priority, top.run_at, top.id
     limit p_limit * 2
     for no key update of q skip locked);

  -- 2. A new snapshot, taken after those locks: every claim committed on these queues is visible,
  --    so counting their running jobs is exact and the limits hold across all workers.
  return query
  with free as (
    select q.id, q.max_running - (
             select count(*) from :SCHEMA._jobs r
              where r.queue_id = q.id and r.locked_at is not null)::int as slots
      from :SCHEMA._job_queues q
     where q.id = any(v_queue_ids)
  ),
  queued as (
    select c.id, free.id as queue_id, c.priority, c.run_at
      from free
      cross join lateral (
        select j.id, j.priority, j.run_at from :SCHEMA._jobs j
         where j.queue_id = free.id and j.is_available and j.run_at <= now()
           and :SCHEMA._claimable(j, p_tasks, p_forbidden_flags)
         order by j.priority, j.run_at, j.id
         limit greatest(free.slots, 0)
      ) c
  ),
  unqueued as (
    select j.id, null::int as queue_id, j.priority, j.run_at from :SCHEMA._jobs j
     where p_queues is null and j.queue_id is null and j.is_available and j.run_at <= now()
       and :SCHEMA._claimable(j, p_tasks, p_forbidden_flags)
     order by j.priority, j.run_at, j.id
     limit p_limit
     for update skip locked
  ),
  picked as (
    select c.id, c.queue_id from (select * from queued union all select * from unqueued) c
     order by c.priority, c.run_at, c.id
     limit p_limit
  )
  update :SCHEMA._jobs as j set
    locked_at = now(), locked_by = p_worker, attempts = j.attempts + 1, updated_at = now()
  from picked
  -- Rechecked on the row as it is now: a job replaced meanwhile may be due later, belong to
  -- another queue or task (add_job with its key), and then it is not ours to take.
  where j.id = picked.id and j.is_available and j.run_at <= now()
    and j.queue_id is not distinct from picked.queue_id
    and :SCHEMA._claimable(j, p_tasks, p_forbidden_flags)
  returning
    j.id, (select q.queue_name from :SCHEMA._job_queues q where q.id = j.queue_id),
    j.task_identifier, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts, j.last_error,
    j.created_at, j.updated_at, j.key, j.locked_at, j.locked_by, j.revision, j.flags,
    'running'::text, j.errors, j.cancel_requested_at, null::timestamptz, null::json, j.headers;
end
$$;

-- An error history entry, newest last; the history keeps the last 25.
create function :SCHEMA._append_error(p_errors jsonb, p_error jsonb) returns jsonb
language sql immutable as $$
  select case when jsonb_array_length(e) > 25 then e - 0 else e end
    from (select coalesce(p_errors, '[]') || p_error as e) x
$$;

-- Records what a worker's jobs came to, in one batch. Only a job still held by the same claim
-- (locked_by and locked_at) is touched: a result from a worker that lost the job, or from an
-- earlier attempt, is rejected. Completed jobs are kept in _finished_jobs for the retention
-- window, or dropped at once when p_keep_completed is false. Returns the accepted ids.
--
-- p_outcomes: [{id, locked_at, outcome, run_at?, error?, result?}], outcome one of
--   completed, cancelled: the job finishes (cancelled also when a cancel was requested);
--   failed: the attempt failed, retry at run_at (or never once attempts = max_attempts);
--   failed_permanently: never retried; snoozed: retry at run_at, the attempt given back;
--   returned: given back at shutdown, ready at once, the attempt given back.
create function :SCHEMA._settle_jobs(
  p_worker text, p_outcomes jsonb, p_keep_completed boolean default true
) returns bigint[]
language plpgsql volatile
set enable_seqscan = off  -- find the jobs by id even when the statistics are stale (see above)
as $$
declare
  v_finished bigint[];
  v_moved bigint[];
  v_ready_now int;
begin
  with o as (
    select (x ->> 'id')::bigint as id, x ->> 'outcome' as outcome, x -> 'result' as result,
           (x ->> 'locked_at')::timestamptz as locked_at
      from jsonb_array_elements(p_outcomes) x
  ),
  done as (
    delete from :SCHEMA._jobs j
     using o
     where j.id = o.id and j.locked_by = p_worker and j.locked_at = o.locked_at
       and (o.outcome in ('completed', 'cancelled') or j.cancel_requested_at is not null)
    returning j.*, o.result,
      case when o.outcome = 'completed' then 'completed' else 'cancelled' end as final_state
  ),
  archived as (
    insert into :SCHEMA._finished_jobs (
      id, queue_name, task_identifier, payload, priority, run_at, attempts, max_attempts, key,
      revision, flags, last_error, errors, state, result, created_at)
    select
      d.id, q.queue_name, d.task_identifier, d.payload, d.priority, d.run_at, d.attempts,
      d.max_attempts, d.key, d.revision, d.flags, d.last_error, d.errors, d.final_state,
      d.result::json, d.created_at
    from done d
    left join :SCHEMA._job_queues q on q.id = d.queue_id
    where p_keep_completed or d.final_state <> 'completed'
    returning id
  )
  select coalesce(array_agg(id), '{}') into v_finished
    from (select a.id from archived a union select d.id from done d) ids;

  with o as (
    select (x ->> 'id')::bigint as id, x ->> 'outcome' as outcome,
           (x ->> 'run_at')::timestamptz as run_at, x -> 'error' as error,
           (x ->> 'locked_at')::timestamptz as locked_at
      from jsonb_array_elements(p_outcomes) x
     where x ->> 'outcome' in ('failed', 'failed_permanently', 'snoozed', 'returned')
  ),
  moved as (
    update :SCHEMA._jobs as j set
      locked_at = null,
      locked_by = null,
      run_at = coalesce(o.run_at, now()),
      attempts = case
        when o.outcome = 'failed_permanently' or j.retry_stopped then j.max_attempts
        when o.outcome = 'failed' then j.attempts
        else greatest(j.attempts - 1, 0)  -- snoozed or given back: the attempt is returned
      end,
      last_error = coalesce(o.error ->> 'message', j.last_error),
      errors = case when o.error is null then j.errors else
        :SCHEMA._append_error(j.errors, o.error || jsonb_build_object(
          'at', now(), 'attempt', j.attempts, 'worker', p_worker)) end,
      updated_at = now()
    from o
    where j.id = o.id and j.locked_by = p_worker and j.locked_at = o.locked_at
    returning j.id, j.is_available and j.run_at <= now() as ready_now
  )
  select coalesce(array_agg(id), '{}'), count(*) filter (where ready_now)
    into v_moved, v_ready_now
    from moved;

  if v_ready_now > 0 then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  return v_finished || v_moved;
end
$$;

-- Releases running jobs whose worker is gone: the attempt counts as failed with p_message and the
-- job retries after graphile-worker's backoff (exp(min(attempts, 10)) seconds), unless it has no
-- attempts left or a cancel was requested. Their queue slots free up with them.
create function :SCHEMA._release_lost_jobs(p_ids bigint[], p_message text) returns bigint[]
language plpgsql volatile as $$
declare
  v_cancelled bigint[];
  v_released bigint[];
begin
  v_cancelled := array(
    select j.id from :SCHEMA._jobs j
     where j.id = any(p_ids) and j.cancel_requested_at is not null);
  update :SCHEMA._jobs set locked_at = null, locked_by = null where id = any(v_cancelled);
  perform :SCHEMA._finish_jobs(v_cancelled, 'cancelled');

  with released as (
    update :SCHEMA._jobs as j set
      run_at = greatest(j.run_at, now() + exp(least(j.attempts, 10)) * interval '1 second'),
      last_error = p_message,
      errors = :SCHEMA._append_error(j.errors, jsonb_build_object(
        'at', now(), 'attempt', j.attempts, 'worker', j.locked_by, 'type', 'WorkerLost',
        'message', p_message)),
      locked_at = null,
      locked_by = null,
      updated_at = now()
    where j.id = any(p_ids) and j.locked_at is not null and j.cancel_requested_at is null
    returning j.id
  )
  select coalesce(array_agg(id), '{}') into v_released from released;
  return v_cancelled || v_released;
end
$$;

-- Rescue: workers whose heartbeat is older than the lease are removed, and every job locked by a
-- worker that is not registered any more is released. Safe to run from many workers at once.
create function :SCHEMA.rescue_stale_jobs() returns bigint[]
language plpgsql volatile as $$
begin
  delete from :SCHEMA._workers w
   where w.id in (select s.id from :SCHEMA._workers s
                   where s.heartbeat_at < now() - s.lease
                   for update skip locked);
  -- New snapshot: jobs claimed by those workers up to their last moment are visible.
  return :SCHEMA._release_lost_jobs(
    array(select j.id from :SCHEMA._jobs j
           where j.locked_at is not null
             and not exists (select 1 from :SCHEMA._workers w where w.id = j.locked_by)
           for update of j skip locked),
    'worker lost: no heartbeat within its lease');
end
$$;

-- graphile-worker's force_unlock_workers: release these workers' jobs now, and forget the workers
-- (a worker that is in fact alive notices at its next heartbeat and registers anew).
create function :SCHEMA.force_unlock_workers(worker_ids text[]) returns bigint[]
language plpgsql volatile as $$
begin
  delete from :SCHEMA._workers w where w.id = any(worker_ids);
  return :SCHEMA._release_lost_jobs(
    array(select j.id from :SCHEMA._jobs j
           where j.locked_at is not null and j.locked_by = any(worker_ids)
           for update of j),
    'worker force-unlocked');
end
$$;

-- Queue control ------------------------------------------------------------------------------

-- Sets global limits by queue name or pattern ({"executions": 10, "runs:*": 1}); existing queues
-- pick them up at once.
create function :SCHEMA.set_queue_limits(limits jsonb) returns void
language plpgsql volatile as $$
begin
  insert into :SCHEMA._queue_policies (pattern, max_running)
    select l.key, l.value::int from jsonb_each_text(limits) l
    on conflict (pattern) do update set max_running = excluded.max_running;
  update :SCHEMA._job_queues q set max_running = :SCHEMA._queue_limit(q.queue_name)
   where q.max_running <> :SCHEMA._queue_limit(q.queue_name);
end
$$;

create function :SCHEMA.pause_queue(queue_name text) returns void
language sql volatile as $$
  insert into :SCHEMA._job_queues (queue_name, max_running, paused)
    values (pause_queue.queue_name, :SCHEMA._queue_limit(pause_queue.queue_name), true)
    on conflict (queue_name) do update set paused = true
$$;

create function :SCHEMA.resume_queue(queue_name text) returns void
language plpgsql volatile as $$
begin
  update :SCHEMA._job_queues q set paused = false where q.queue_name = resume_queue.queue_name;
  perform pg_notify(:JOBS_CHANNEL, '');
end
$$;
