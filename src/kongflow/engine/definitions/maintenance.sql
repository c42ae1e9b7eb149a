-- Maintenance: leases of singleton roles (the leader), retention cleanup, queue garbage collection.

create or replace function :SCHEMA._acquire_lease(p_name text, p_holder text, p_ttl interval)
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

create or replace function :SCHEMA._release_lease(p_name text, p_holder text) returns void
language sql volatile as $$
  delete from :SCHEMA._leases where name = p_name and holder = p_holder
$$;

-- Deletes up to p_batch finished jobs past their retention: completed or cancelled ones finished
-- before now() - p_completed, permanently failed ones last updated before now() - p_failed.
-- Returns how many of each were deleted.
create or replace function :SCHEMA.cleanup_jobs(
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
  delete from :SCHEMA._result_waits w where w.since < now() - interval '1 day';  -- dead waiters
  -- Workflows whose jobs are all gone (finished and past retention), with their steps, and the
  -- dependency edges of jobs that are gone.
  delete from :SCHEMA._workflows w
   where w.id in (select x.id from :SCHEMA._workflows x
                   where x.created_at < now() - least(p_completed, p_failed)
                     and not exists (select 1 from :SCHEMA._workflow_steps s
                                      where s.workflow_id = x.id
                                        and (exists (select 1 from :SCHEMA._jobs j where j.id = s.job_id)
                                             or exists (select 1 from :SCHEMA._finished_jobs f
                                                         where f.id = s.job_id)))
                   order by x.id limit p_batch);
  delete from :SCHEMA._job_deps d
   where (d.depends_on, d.job_id) in (
     select x.depends_on, x.job_id from :SCHEMA._job_deps x
      where x.settled
        and not exists (select 1 from :SCHEMA._jobs j where j.id = x.job_id)
        and not exists (select 1 from :SCHEMA._finished_jobs f where f.id = x.job_id)
      limit p_batch);
  return query select v_finished, v_failed;
end
$$;

-- Removes queue rows with no jobs left (paused queues are kept). Enqueuers hold a key-share lock
-- on their queue's row, which the row lock here skips, so a queue receiving a job survives.
create or replace function :SCHEMA.gc_job_queues() returns int
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
