-- Rescue: heartbeats, and the release of jobs whose worker or claim was lost.

create or replace function :SCHEMA._release_lost_jobs(
  p_ids bigint[], p_message text, p_type text default 'WorkerLost'
) returns bigint[]
language plpgsql volatile as $$
declare
  v_cancelled bigint[];
  v_released bigint[];
  v_spent bigint[];
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
    returning j.id, j.is_available and j.run_at <= now() as ready_now,
      j.attempts >= j.max_attempts as spent
  )
  select coalesce(array_agg(id), '{}'), count(*) filter (where ready_now),
         coalesce(array_agg(id) filter (where spent), '{}')
    into v_released, v_ready, v_spent
    from released;
  if v_ready > 0 or cardinality(v_cancelled) > 0 then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  perform :SCHEMA._settled('{}', v_spent, v_released);  -- the last attempt of some was spent
  return v_cancelled || v_released;
end
$$;

-- A worker's heartbeat. p_held: the jobs it is running or still has results of. A job locked by
-- this worker for longer than p_grace that it does not hold was claimed for it but never reached
-- it (the claim committed and its reply was lost): it is released like a lost worker's job.
-- Returns whether the worker is registered (if not, nothing else is done: it must register
-- again), the released jobs, and its running jobs that were asked to stop.
create or replace function :SCHEMA._heartbeat(p_worker text, p_held bigint[], p_grace interval)
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

-- Rescue: workers whose heartbeat is older than the lease are removed, and every job locked by a
-- worker that is not registered any more is released. Safe to run from many workers at once.
create or replace function :SCHEMA.rescue_stale_jobs() returns bigint[]
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
create or replace function :SCHEMA.force_unlock_workers(worker_ids text[]) returns bigint[]
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
