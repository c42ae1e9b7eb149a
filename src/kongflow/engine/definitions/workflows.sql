-- Workflows: enqueueing jobs with dependencies in one transaction, releasing or cancelling
-- dependents as their dependencies settle, and reading a workflow back.

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
  if not exists (select 1 from :SCHEMA._job_deps d
                  where d.depends_on = any(p_completed || p_failed) and not d.settled) then
    return;
  end if;
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
-- gone). Called after the statement that settled them.
create or replace function :SCHEMA._settled(
  p_completed bigint[], p_failed bigint[], p_others bigint[] default '{}'
) returns void
language plpgsql volatile as $$
begin
  perform :SCHEMA._announce_settled(p_completed || p_failed || p_others);
  perform :SCHEMA._release_dependents(p_completed, p_failed);
end
$$;

-- Enqueues a workflow in one transaction: {"name": ..., "steps": [{"step": "b", "spec": {add_job's
-- arguments}, "after": ["a"], "after_jobs": [job ids], "run_if_failed": false}]}, each step
-- listed after the steps it comes after (the Python client orders them). A step runs when every
-- step and job it comes after completed. A step named twice, or after a step not listed before
-- it (unknown, later, or in a cycle), is refused. Returns each step's job (read after the
-- inserts, which a query around the call would not see).
create or replace function :SCHEMA.add_workflow(p_workflow jsonb)
returns table (workflow_id bigint, step text, job :SCHEMA._all_jobs)
language plpgsql volatile as $$
declare
  v_workflow bigint;
  v_step jsonb;
  v_name text;
  v_spec jsonb;
  v_after text[];
  v_missing text;
  v_step_deps bigint[];
  v_job :SCHEMA.jobs;
  v_after_jobs bigint[];
  v_pending int;
  v_failed bigint[];
  v_run_at timestamptz;
begin
  if jsonb_typeof(p_workflow -> 'steps') is distinct from 'array'
     or jsonb_array_length(p_workflow -> 'steps') = 0 then
    raise exception 'add_workflow: a workflow needs at least one step' using errcode = '22023';
  end if;
  insert into :SCHEMA._workflows (name) values (p_workflow ->> 'name') returning id into v_workflow;
  for v_step in select x from jsonb_array_elements(p_workflow -> 'steps') x loop
    v_name := v_step ->> 'step';
    v_spec := coalesce(v_step -> 'spec', '{}');
    if v_name is null or v_name = '' then
      raise exception 'add_workflow: every step needs a name' using errcode = '22023';
    end if;
    if exists (select 1 from :SCHEMA._workflow_steps s
                where s.workflow_id = v_workflow and s.step = v_name) then
      raise exception 'add_workflow: step % is named twice', v_name using errcode = '22023';
    end if;
    if v_spec ->> 'job_key' is not null then
      raise exception 'add_workflow: step % has a job key; workflow steps cannot', v_name
        using errcode = '22023';
    end if;
    v_after := array(select distinct a from jsonb_array_elements_text(
      case when jsonb_typeof(v_step -> 'after') = 'array' then v_step -> 'after' else '[]' end) a);
    select a into v_missing from unnest(v_after) a
     where not exists (select 1 from :SCHEMA._workflow_steps s
                        where s.workflow_id = v_workflow and s.step = a)
     limit 1;
    if v_missing is not null then
      raise exception 'add_workflow: step % comes after %, which is not a step listed before it'
        ' (unknown, later, or in a cycle)', v_name, v_missing using errcode = '22023';
    end if;
    -- Jobs outside the workflow: a completed one is done; any other is waited for, and one that
    -- already failed for good, was cancelled or is gone is settled as failed once the step exists.
    v_after_jobs := array(select distinct x::bigint from jsonb_array_elements_text(
      case when jsonb_typeof(v_step -> 'after_jobs') = 'array'
           then v_step -> 'after_jobs' else '[]' end) x);
    -- Share locks order this against whatever settles them: one that holds a row already
    -- commits first (and is seen here), one that comes after sees this step's edges.
    perform 1 from :SCHEMA._jobs j where j.id = any(v_after_jobs) order by j.id for share;
    v_after_jobs := array(
      select x from unnest(v_after_jobs) x
       where not exists (select 1 from :SCHEMA._finished_jobs f
                          where f.id = x and f.state = 'completed'));
    v_step_deps := array(select s.job_id from :SCHEMA._workflow_steps s
                          where s.workflow_id = v_workflow and s.step = any(v_after));
    -- (an earlier step is settled already only if it was cancelled here, after a failed job)
    v_failed := array(
      select x from unnest(v_step_deps || v_after_jobs) x
       where not exists (select 1 from :SCHEMA._jobs j
                          where j.id = x and (j.is_available or j.locked_at is not null)));
    v_pending := cardinality(v_step_deps) + cardinality(v_after_jobs);
    v_run_at := (v_spec ->> 'run_at')::timestamptz;
    v_job := :SCHEMA.add_job(
      identifier => v_spec ->> 'identifier',
      payload => nullif(v_spec -> 'payload', 'null')::json,
      queue_name => v_spec ->> 'queue_name',
      run_at => case when v_pending > 0 then '9999-01-01 00:00:00+00'::timestamptz else v_run_at end,
      max_attempts => (v_spec ->> 'max_attempts')::int,
      priority => (v_spec ->> 'priority')::int,
      flags => case when jsonb_typeof(v_spec -> 'flags') = 'array'
                    then array(select jsonb_array_elements_text(v_spec -> 'flags')) end,
      headers => nullif(v_spec -> 'headers', 'null'));
    if v_pending > 0 then
      update :SCHEMA._jobs j set pending_deps = v_pending where j.id = v_job.id;
    end if;
    insert into :SCHEMA._job_deps (depends_on, job_id)
      select x, v_job.id from unnest(v_step_deps || v_after_jobs) x;
    insert into :SCHEMA._workflow_steps (workflow_id, step, job_id, run_at, run_if_failed)
      values (v_workflow, v_name, v_job.id, v_run_at,
              coalesce((v_step ->> 'run_if_failed')::boolean, false));
    if cardinality(v_failed) > 0 then
      perform :SCHEMA._settled('{}', v_failed);
    end if;
  end loop;
  return query
    select v_workflow, s.step, a from :SCHEMA._workflow_steps s
      join :SCHEMA._all_jobs a on a.id = s.job_id
     where s.workflow_id = v_workflow order by s.job_id;
end
$$;
