-- Workflows: enqueueing jobs with dependencies in one transaction, releasing or cancelling
-- dependents as their dependencies settle, and reading a workflow back.

-- A JSON value as a list: itself if it is an array, else empty (a missing or null key).
create or replace function :SCHEMA._json_list(p_value jsonb) returns jsonb
language sql immutable as $$
  select case when jsonb_typeof(p_value) = 'array' then p_value else '[]'::jsonb end
$$;

-- Counts the settling of p_completed and p_failed against the jobs that depend on them, once per
-- edge: a dependent whose last dependency settled is released (ready at its own run_at); one
-- whose dependency failed or was cancelled is cancelled, and so on down the graph, unless its
-- step runs anyway (run_if_failed), when the failure counts as settled.
create or replace function :SCHEMA._release_dependents(p_completed bigint[], p_failed bigint[])
returns void
language plpgsql volatile as $$
declare
  v_cancel bigint[];
  v_released int;
begin
  with edges as (
    update :SCHEMA._job_deps d set settled = true
     where d.depends_on = any(p_completed || p_failed) and not d.settled
    returning d.job_id, d.depends_on = any(p_failed) as failed
  ),
  counted as (
    select e.job_id, count(*)::int as n,
           bool_or(e.failed and not coalesce(s.run_if_failed, false)) as cancel
      from edges e
      left join :SCHEMA._workflow_steps s on s.job_id = e.job_id
     group by e.job_id
  ),
  released as (
    update :SCHEMA._jobs j set
      pending_deps = j.pending_deps - c.n,
      run_at = case when j.pending_deps > c.n then j.run_at
                    else greatest(coalesce(s.run_at, now()), now()) end,
      updated_at = now()
      from counted c
      left join :SCHEMA._workflow_steps s on s.job_id = c.job_id
     where j.id = c.job_id and not c.cancel and j.locked_at is null
    returning j.pending_deps
  )
  select array(select c.job_id from counted c where c.cancel),
         (select count(*) from released r where r.pending_deps = 0)
    into v_cancel, v_released;
  if v_released > 0 then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  if cardinality(v_cancel) > 0 then
    update :SCHEMA._jobs j
       set last_error = 'a job it depends on failed or was cancelled', updated_at = now()
     where j.id = any(v_cancel);
    perform :SCHEMA._finish_jobs(v_cancel, 'cancelled');  -- and their dependents, in turn
  end if;
end
$$;

-- What comes of jobs that just settled: their waiters are woken (all of p_ids), and their
-- dependents counted (p_completed completed; p_failed failed for good, were cancelled or are
-- gone). Called after the statement that settled them; on every settle's path, so what nobody
-- uses costs a look at an empty table and a probe of the dependency index.
create or replace function :SCHEMA._settled(
  p_completed bigint[], p_failed bigint[], p_others bigint[] default '{}'
) returns void
language plpgsql volatile as $$
begin
  if exists (select 1 from :SCHEMA._result_waits) then
    perform :SCHEMA._announce_settled(p_completed || p_failed || p_others);
  end if;
  if exists (select 1 from :SCHEMA._job_deps d
              where d.depends_on = any(p_completed || p_failed) and not d.settled) then
    perform :SCHEMA._release_dependents(p_completed, p_failed);
  end if;
end
$$;

-- Enqueues a workflow in one transaction: {"name": ..., "steps": [{"step": "b", "spec": {add_job's
-- arguments}, "after": ["a"], "after_jobs": [job ids], "run_if_failed": false}]}, each step
-- listed after the steps it comes after (the Python client orders them). A step runs when every
-- step and job it comes after completed. A step named twice, or after a step not listed before
-- it (unknown, later, or in a cycle), is refused. Set-based: a few statements whatever the
-- number of steps. Returns each step's job (read after the inserts, which a query around the
-- call would not see).
create or replace function :SCHEMA.add_workflow(p_workflow jsonb)
returns table (workflow_id bigint, step text, job :SCHEMA._all_jobs)
language plpgsql volatile as $$
declare
  v_steps jsonb := p_workflow -> 'steps';
  v_workflow bigint;
  v_names text[];
  v_ids bigint[];
  v_step text;
  v_other text;
  v_bad record;
  v_after_jobs bigint[];
  v_waited bigint[];  -- of v_after_jobs, those not completed
  v_failed bigint[];
begin
  if jsonb_typeof(v_steps) is distinct from 'array' or jsonb_array_length(v_steps) = 0 then
    raise exception 'add_workflow: a workflow needs at least one step' using errcode = '22023';
  end if;
  v_names := array(select e.x ->> 'step'
                     from jsonb_array_elements(v_steps) with ordinality e (x, n) order by e.n);
  if exists (select 1 from unnest(v_names) u where u is null or u = '') then
    raise exception 'add_workflow: every step needs a name' using errcode = '22023';
  end if;
  select u into v_step from unnest(v_names) u group by u having count(*) > 1 limit 1;
  if v_step is not null then
    raise exception 'add_workflow: step % is named twice', v_step using errcode = '22023';
  end if;
  select e.x ->> 'step', a into v_step, v_other
    from jsonb_array_elements(v_steps) with ordinality e (x, n)
    cross join lateral jsonb_array_elements_text(:SCHEMA._json_list(e.x -> 'after')) a
    left join unnest(v_names) with ordinality t (name, n) on t.name = a and t.n < e.n
   where t.n is null
   limit 1;
  if v_step is not null then
    raise exception 'add_workflow: step % comes after %, which is not a step listed before it'
      ' (unknown, later, or in a cycle)', v_step, v_other using errcode = '22023';
  end if;
  select e.x ->> 'step' into v_step from jsonb_array_elements(v_steps) e (x)
   where e.x -> 'spec' ->> 'job_key' is not null limit 1;
  if v_step is not null then
    raise exception 'add_workflow: step % has a job key; workflow steps cannot', v_step
      using errcode = '22023';
  end if;
  select e.n, e.x -> 'spec' ->> 'identifier' as identifier,
         e.x -> 'spec' ->> 'queue_name' as queue_name,
         (e.x -> 'spec' ->> 'max_attempts')::int as max_attempts
    into v_bad
    from jsonb_array_elements(v_steps) with ordinality e (x, n)
   where coalesce(e.x -> 'spec' ->> 'identifier', '') = '' or e.x -> 'spec' ->> 'queue_name' = ''
      or (e.x -> 'spec' ->> 'max_attempts')::int not between 1 and 32767
   order by e.n
   limit 1;
  if found then
    perform :SCHEMA._check_job_args(
      format('add_workflow: step %s', v_names[v_bad.n]), v_bad.identifier, v_bad.queue_name,
      v_bad.max_attempts, null, 'replace');
  end if;

  -- Jobs outside the workflow, share-locked first: whatever settles one either commits before
  -- (and is seen here) or comes after and sees this workflow's edges. A completed one is done;
  -- any other is waited for, and one that failed for good, was cancelled or is gone is settled
  -- as failed once the steps exist.
  v_after_jobs := array(
    select distinct aj::bigint from jsonb_array_elements(v_steps) e (x),
      jsonb_array_elements_text(:SCHEMA._json_list(e.x -> 'after_jobs')) aj order by 1);
  perform 1 from :SCHEMA._jobs j where j.id = any(v_after_jobs) order by j.id for share;
  v_waited := array(select x from unnest(v_after_jobs) x
                     where not exists (select 1 from :SCHEMA._finished_jobs f
                                        where f.id = x and f.state = 'completed'));
  v_failed := array(select x from unnest(v_waited) x
                     where not exists (select 1 from :SCHEMA._jobs j
                                        where j.id = x and (j.is_available or j.locked_at is not null)));

  insert into :SCHEMA._workflows (name) values (p_workflow ->> 'name') returning id into v_workflow;
  perform :SCHEMA._lock_queues(array(
    select distinct e.x -> 'spec' ->> 'queue_name' from jsonb_array_elements(v_steps) e (x)
     where e.x -> 'spec' ->> 'queue_name' is not null));
  v_ids := array(select nextval(pg_get_serial_sequence(':SCHEMA._jobs', 'id'))
                   from generate_series(1, cardinality(v_names)));
  insert into :SCHEMA._job_deps (depends_on, job_id)
    select distinct t.id, v_ids[e.n]
      from jsonb_array_elements(v_steps) with ordinality e (x, n)
      cross join lateral jsonb_array_elements_text(:SCHEMA._json_list(e.x -> 'after')) a
      join unnest(v_names, v_ids) t (name, id) on t.name = a
    union
    select distinct aj::bigint, v_ids[e.n]
      from jsonb_array_elements(v_steps) with ordinality e (x, n)
      cross join lateral jsonb_array_elements_text(:SCHEMA._json_list(e.x -> 'after_jobs')) aj
     where aj::bigint = any(v_waited);
  with steps as (
    select e.n, coalesce(e.x -> 'spec', '{}') as s,
           (select count(*) from :SCHEMA._job_deps d where d.job_id = v_ids[e.n])::int as pending
      from jsonb_array_elements(v_steps) with ordinality e (x, n)
  )
  insert into :SCHEMA._jobs (
    id, queue_id, task_identifier, payload, run_at, max_attempts, priority, flags, headers,
    pending_deps)
  overriding system value
  select v_ids[st.n], q.id, st.s ->> 'identifier',
         coalesce(nullif(st.s -> 'payload', 'null')::json, '{}'),
         case when st.pending > 0 then '9999-01-01 00:00:00+00'::timestamptz
              else coalesce((st.s ->> 'run_at')::timestamptz, now()) end,
         coalesce((st.s ->> 'max_attempts')::int, 25), coalesce((st.s ->> 'priority')::int, 0),
         case when jsonb_typeof(st.s -> 'flags') = 'array' then
           (select jsonb_object_agg(f, true) from jsonb_array_elements_text(st.s -> 'flags') f)
         end,
         nullif(st.s -> 'headers', 'null'), st.pending
    from steps st
    left join :SCHEMA._job_queues q on q.queue_name = st.s ->> 'queue_name'
   order by st.n;
  insert into :SCHEMA._workflow_steps (workflow_id, step, job_id, run_at, run_if_failed)
    select v_workflow, v_names[e.n], v_ids[e.n], (e.x -> 'spec' ->> 'run_at')::timestamptz,
           coalesce((e.x ->> 'run_if_failed')::boolean, false)
      from jsonb_array_elements(v_steps) with ordinality e (x, n);
  if cardinality(v_failed) > 0 then
    perform :SCHEMA._settled('{}', v_failed);
  end if;
  if exists (select 1 from :SCHEMA._jobs j
              where j.id = any(v_ids) and j.pending_deps = 0 and j.run_at <= now()) then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  return query
    select v_workflow, s.step, a from :SCHEMA._workflow_steps s
      join :SCHEMA._all_jobs a on a.id = s.job_id
     where s.workflow_id = v_workflow order by s.job_id;
end
$$;
