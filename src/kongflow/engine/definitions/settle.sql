-- Settling: recording what jobs came to, and moving finished jobs out of the hot set.

-- An error history entry, newest last; the history keeps the last 25.
create or replace function :SCHEMA._append_error(p_errors jsonb, p_error jsonb) returns jsonb
language sql immutable as $$
  select case when jsonb_array_length(e) > 25 then e - 0 else e end
    from (select coalesce(p_errors, '[]') || p_error as e) x
$$;

-- Wakes the waiters (Client.wait_for) of those of p_ids that someone waits for: their ids on
-- the settled channel, at most 500 a notification (a payload holds 8000 bytes). Called after the
-- statement that settled the jobs, so that its snapshot sees every wait registered before the
-- jobs' rows were locked (a waiter registers under a share lock on the row: see wait_for).
create or replace function :SCHEMA._announce_settled(p_ids bigint[]) returns void
language plpgsql volatile as $$
declare
  v_payload text;
begin
  for v_payload in
    select string_agg(w.job_id::text, ',')
      from (select d.job_id, (row_number() over (order by d.job_id) - 1) / 500 as chunk
              from (select distinct job_id from :SCHEMA._result_waits
                     where job_id = any(p_ids)) d) w
     group by w.chunk
  loop
    perform pg_notify(:SETTLED_CHANNEL, v_payload);
  end loop;
end
$$;

-- Registers a wait for the job's outcome; returns its id (the waiter deletes it when done). The
-- share lock on the job's row orders this against whatever settles the job: a settle that holds
-- the row already commits first (the waiter then reads the job as settled), and one that comes
-- after finds this wait committed when it announces.
create or replace function :SCHEMA._register_wait(p_job bigint) returns bigint
language plpgsql volatile as $$
declare
  v_id bigint;
begin
  perform 1 from :SCHEMA._jobs j where j.id = p_job for share;
  insert into :SCHEMA._result_waits (job_id) values (p_job) returning id into v_id;
  return v_id;
end
$$;

-- Finishes jobs that are not running: moves them from the hot set to _finished_jobs.
create or replace function :SCHEMA._finish_jobs(p_ids bigint[], p_state text) returns bigint[]
language plpgsql volatile as $$
declare
  v_ids bigint[];
begin
  with done as (
    delete from :SCHEMA._jobs j
     where j.id = any(p_ids) and j.locked_at is null
    returning j.*
  ),
  archived as (
    insert into :SCHEMA._finished_jobs (
      id, queue_name, task_identifier, payload, priority, run_at, attempts, max_attempts, key,
      revision, flags, last_error, errors, state, created_at)
    select
      d.id, q.queue_name, d.task_identifier, d.payload, d.priority, d.run_at, d.attempts,
      d.max_attempts, d.key, d.revision, d.flags, d.last_error, d.errors, p_state, d.created_at
    from done d
    left join :SCHEMA._job_queues q on q.id = d.queue_id
    returning id
  )
  select coalesce(array_agg(id order by id), '{}') into v_ids from archived;
  if p_state = 'completed' then
    perform :SCHEMA._settled(v_ids, '{}');
  else
    perform :SCHEMA._settled('{}', v_ids);
  end if;
  return v_ids;
end
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
--
-- Lean on its hot path (most batches are all completions): the finished ids come from the delete
-- alone (every archived job was deleted first, and a data-modifying WITH runs whether read or
-- not), and the pass for retries, snoozes and give-backs is skipped when no outcome needs it.
--
-- It announces freed slots: a job leaving a named queue can make that queue's next job
-- claimable, a change no enqueue announces. Workers do not look for work after every result of
-- their own (most such claims found nothing), so the NOTIFY is sent here, for every listening
-- worker, when a queue that lost a running job has ready work.
create or replace function :SCHEMA._settle_jobs(
  p_worker text, p_outcomes jsonb, p_keep_completed boolean default true
) returns bigint[]
language plpgsql volatile
set enable_seqscan = off  -- find the jobs by id even when the statistics are stale
set jit = off  -- the seqscan ban inflates the cost past jit_above_cost (see _claim_jobs)
as $$
declare
  v_finished bigint[];
  v_completed bigint[];
  v_cancelled bigint[];
  v_spent bigint[] := '{}';  -- failed for good: their last attempt failed
  v_freed_queues int[];  -- named queues that lost a running job
  v_others int;
  v_moved bigint[] := '{}';
  v_moved_queues int[];
  v_ready_now int := 0;
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
  )
  select coalesce((select array_agg(d.id) from done d), '{}'),
         coalesce((select array_agg(d.id) from done d where d.final_state = 'completed'), '{}'),
         coalesce((select array_agg(d.id) from done d where d.final_state = 'cancelled'), '{}'),
         (select array_agg(distinct d.queue_id) from done d where d.queue_id is not null),
         (select count(*) from o where o.outcome not in ('completed', 'cancelled'))
    into v_finished, v_completed, v_cancelled, v_freed_queues, v_others;

  if v_others > 0 then
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
      returning j.id, j.queue_id, j.is_available and j.run_at <= now() as ready_now,
        j.attempts >= j.max_attempts as spent
    )
    select coalesce(array_agg(id), '{}'), count(*) filter (where ready_now),
           array_agg(distinct queue_id) filter (where queue_id is not null),
           coalesce(array_agg(id) filter (where spent), '{}')
      into v_moved, v_ready_now, v_moved_queues, v_spent
      from moved;
  end if;

  if v_ready_now > 0 or exists (
       select 1 from :SCHEMA._jobs j
        where j.queue_id = any(v_freed_queues || v_moved_queues)
          and j.is_available and j.run_at <= now()) then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  -- Waiters woken, dependents released or cancelled (retried jobs only wake their waiters).
  perform :SCHEMA._settled(v_completed, v_cancelled || v_spent, v_moved);
  return v_finished || v_moved;
end
$$;
