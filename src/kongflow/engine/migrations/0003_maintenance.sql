-- Cron bookkeeping, leader election for maintenance, retention and garbage collection.

-- One row per cron item ever seen: the last tick enqueued makes each tick happen once, however
-- many workers run the schedule, and tells backfill where to resume.
create table :SCHEMA._known_crontabs (
  identifier text primary key,
  known_since timestamptz not null,
  last_execution timestamptz
);

-- Registers cron items; returns the ones known before (their last tick, for backfill).
create function :SCHEMA._register_crontabs(p_identifiers text[], p_now timestamptz)
returns table (identifier text, known_since timestamptz, last_execution timestamptz)
language plpgsql volatile as $$
begin
  insert into :SCHEMA._known_crontabs as k (identifier, known_since)
    select i, p_now from unnest(p_identifiers) i
    on conflict on constraint _known_crontabs_pkey do nothing;
  return query
    select k.identifier, k.known_since, k.last_execution from :SCHEMA._known_crontabs k
     where k.identifier = any(p_identifiers) and k.known_since < p_now;
end
$$;

-- Enqueues cron ticks, each at most once: a tick is taken by moving its item's last_execution
-- forward, which only one transaction can do. Ticks are {identifier, ts, backfilled, task,
-- payload, queue_name, priority, max_attempts, job_key, job_key_mode}. Returns the job ids.
create function :SCHEMA._schedule_cron(p_ticks jsonb) returns bigint[]
language plpgsql volatile as $$
declare
  v_tick jsonb;
  v_ids bigint[] := '{}';
  v_job :SCHEMA.jobs;
begin
  for v_tick in
    select t from jsonb_array_elements(p_ticks) t order by (t ->> 'ts')::timestamptz
  loop
    update :SCHEMA._known_crontabs k set last_execution = (v_tick ->> 'ts')::timestamptz
     where k.identifier = v_tick ->> 'identifier'
       and (k.last_execution is null or k.last_execution < (v_tick ->> 'ts')::timestamptz);
    continue when not found;
    v_job := :SCHEMA.add_job(
      identifier => v_tick ->> 'task',
      payload => (coalesce(v_tick -> 'payload', '{}') || jsonb_build_object('_cron',
        jsonb_build_object('ts', v_tick -> 'ts', 'backfilled', v_tick -> 'backfilled')))::json,
      queue_name => v_tick ->> 'queue_name',
      run_at => (v_tick ->> 'ts')::timestamptz,
      max_attempts => (v_tick ->> 'max_attempts')::int,
      job_key => v_tick ->> 'job_key',
      priority => (v_tick ->> 'priority')::int,
      job_key_mode => coalesce(v_tick ->> 'job_key_mode', 'replace'));
    v_ids := v_ids || v_job.id;
  end loop;
  return v_ids;
end
$$;

-- Leases of singleton roles (the maintenance leader): the holder renews before expires_at; any
-- worker may take an expired lease.
create table :SCHEMA._leases (
  name text primary key,
  holder text not null,
  expires_at timestamptz not null
);

create function :SCHEMA._acquire_lease(p_name text, p_holder text, p_ttl interval)
returns boolean
language sql volatile as $$
  with taken as (
    insert into :SCHEMA._leases as l (name, holder, expires_at)
    values (p_name, p_holder, now() + p_ttl)
    on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at
     where l.holder = excluded.holder or l.expires_at < now()
    returning 1
  )
  select exists (select 1 from taken)
$$;

create index _jobs_failed on :SCHEMA._jobs (updated_at)
  where locked_at is null and attempts >= max_attempts;

-- Deletes up to p_batch finished jobs past their retention: completed or cancelled ones finished
-- before now() - p_completed, permanently failed ones last updated before now() - p_failed.
-- Returns how many of each were deleted.
create function :SCHEMA.cleanup_jobs(
  p_completed interval, p_failed interval, p_batch int default 1000
) returns table (finished bigint, failed bigint)
language plpgsql volatile as $$
declare
  v_finished bigint;
  v_failed bigint;
begin
  with gone as (
    delete from :SCHEMA._finished_jobs f
     where f.id in (select x.id from :SCHEMA._finished_jobs x
                     where x.finished_at < now() - p_completed
                     order by x.finished_at limit p_batch)
    returning 1
  )
  select count(*) into v_finished from gone;
  with gone as (
    delete from :SCHEMA._jobs j
     where j.id in (select x.id from :SCHEMA._jobs x
                     where x.locked_at is null and x.attempts >= x.max_attempts
                       and x.updated_at < now() - p_failed
                     order by x.updated_at limit p_batch
                     for update skip locked)
    returning 1
  )
  select count(*) into v_failed from gone;
  return query select v_finished, v_failed;
end
$$;

-- Removes queue rows with no jobs left (paused queues are kept). Enqueuers hold a key-share lock
-- on their queue's row, which the row lock here skips, so a queue receiving a job survives.
create function :SCHEMA.gc_job_queues() returns int
language plpgsql volatile as $$
declare
  v_ids int[];
  v_deleted int;
begin
  v_ids := array(
    select q.id from :SCHEMA._job_queues q
     where not q.paused
       and not exists (select 1 from :SCHEMA._jobs j where j.queue_id = q.id)
     for update skip locked);
  -- New snapshot, taken after the locks: jobs committed to these queues meanwhile are seen.
  delete from :SCHEMA._job_queues q
   where q.id = any(v_ids)
     and not exists (select 1 from :SCHEMA._jobs j where j.queue_id = q.id);
  get diagnostics v_deleted = row_count;
  return v_deleted;
end
$$;

-- Per-queue figures for the dashboard, metrics and `kongflow queues` (null queue_name = jobs with
-- no queue).
create view :SCHEMA.queue_stats as
  select
    q.queue_name,
    count(*) filter (where j.state = 'available') as available,
    count(*) filter (where j.state = 'scheduled') as scheduled,
    count(*) filter (where j.state = 'running') as running,
    count(*) filter (where j.state = 'failed') as failed,
    min(j.run_at) filter (where j.state = 'available') as oldest_available_at,
    q.max_running,
    coalesce(q.paused, false) as paused
  from :SCHEMA.jobs j
  full join :SCHEMA._job_queues q on q.queue_name = j.queue_name
  group by q.queue_name, q.max_running, q.paused;

create function :SCHEMA._release_lease(p_name text, p_holder text) returns void
language sql volatile as $$
  delete from :SCHEMA._leases where name = p_name and holder = p_holder
$$;

-- Makes a job that is not running ready at once; a permanently failed one gets one more attempt.
create function :SCHEMA.retry_job(job_id bigint) returns :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_out :SCHEMA.jobs;
begin
  update :SCHEMA._jobs as j set
    run_at = now(),
    max_attempts = greatest(j.max_attempts, j.attempts + 1),
    retry_stopped = false,
    updated_at = now()
  where j.id = retry_job.job_id and j.locked_at is null;
  if found then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  select * into v_out from :SCHEMA.jobs j where j.id = retry_job.job_id;
  return v_out;
end
$$;

-- Deletes jobs that are not running, finished ones included; returns the deleted ids.
create function :SCHEMA.delete_jobs(job_ids bigint[]) returns bigint[]
language sql volatile as $$
  with hot as (
    delete from :SCHEMA._jobs j where j.id = any(job_ids) and j.locked_at is null returning j.id
  ),
  finished as (
    delete from :SCHEMA._finished_jobs f where f.id = any(job_ids) returning f.id
  )
  select coalesce(array_agg(id order by id), '{}')
    from (select id from hot union all select id from finished) ids
$$;
