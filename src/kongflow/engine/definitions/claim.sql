-- Claiming: which jobs a worker may take, and the batch claim.

-- Worker-side filter shared by the claim and the drain check.
create or replace function :SCHEMA._claimable(
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
--
-- Ruling them out inflates the plan's cost past jit_above_cost, and on servers built with LLVM
-- every call then spent 80-120 ms compiling a plan that runs in under a millisecond: no JIT.
--
-- The statements are planned once and the plans reused: left to choose, PostgreSQL made a custom
-- plan on every call, ~0.45 ms of a one-job claim's ~0.9 ms and so of every job's
-- enqueue-to-start latency. The generic plans take the same index paths.
create or replace function :SCHEMA._claim_jobs(
  p_worker text, p_limit int, p_tasks text[], p_queues text[], p_forbidden_flags text[]
) returns setof :SCHEMA.jobs
language plpgsql volatile
set enable_seqscan = off
set enable_bitmapscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_queue_ids int[];
  v_now timestamptz;
  v_rated int[];
  v_room int[];  -- what each of v_rated may still start in its window
begin
  v_now := clock_timestamp();  -- for step 1's look at rates; taken again after the locks
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
       and (q.rate_max is null or (
             select coalesce(sum(s.jobs), 0) from :SCHEMA._rate_starts s
              where s.queue_id = q.id and s.started_at > v_now - q.rate_per)
             < q.rate_max)
     order by top.priority, top.run_at, top.id
     limit p_limit * 2
     for no key update of q skip locked);

  -- 2. A new snapshot, taken after those locks: every claim committed on these queues is visible,
  --    so counting their running jobs (and their recent starts) is exact and the limits hold
  --    across all workers. A rate-limited queue's starts are counted at v_now, a time taken
  --    after its lock: the claims of one queue are serialized by that lock, so their times
  --    increase, and no window of `rate_per` ever holds more than rate_max of them.
  v_now := clock_timestamp();
  v_rated := array(select q.id from :SCHEMA._job_queues q
                    where q.id = any(v_queue_ids) and q.rate_max is not null);
  if cardinality(v_rated) > 0 then
    delete from :SCHEMA._rate_starts s
     using :SCHEMA._job_queues q
     where q.id = any(v_rated) and s.queue_id = q.id and s.started_at <= v_now - q.rate_per;
    -- Once per rate-limited queue, before the claim statement reads it.
    v_room := array(
      select q.rate_max - coalesce((
               select sum(s.jobs) from :SCHEMA._rate_starts s
                where s.queue_id = q.id and s.started_at > v_now - q.rate_per), 0)::int
        from unnest(v_rated) with ordinality r (id, n)
        join :SCHEMA._job_queues q on q.id = r.id
       order by r.n);
  end if;
  return query
  with free as (
    -- At most p_limit a queue: more would only be read and sorted to be left (a queue with a
    -- high limit would have its every job read at each claim).
    select q.id, least(
             q.max_running - (
               select count(*) from :SCHEMA._jobs r
                where r.queue_id = q.id and r.locked_at is not null)::int,
             p_limit,
             (select x.room from unnest(v_rated, v_room) x (id, room) where x.id = q.id)
           ) as slots
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
    locked_at = v_now, locked_by = p_worker, attempts = j.attempts + 1, updated_at = now()
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
  if cardinality(v_rated) > 0 then  -- the starts rate limits count: this claim's, at v_now
    insert into :SCHEMA._rate_starts (queue_id, started_at, jobs)
    select j.queue_id, v_now, count(*) from :SCHEMA._jobs j
     where j.queue_id = any(v_rated) and j.locked_at = v_now and j.locked_by = p_worker
     group by j.queue_id;
  end if;
end
$$;
