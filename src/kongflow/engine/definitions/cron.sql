-- Cron bookkeeping: each tick of a cron item is enqueued exactly once.

-- Registers cron items; returns the ones known before (their last tick, for backfill).
create or replace function :SCHEMA._register_crontabs(p_identifiers text[], p_now timestamptz)
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

-- Records each item's pattern and task ({identifier, pattern, task} objects), as the worker
-- registering them has them.
create or replace function :SCHEMA._describe_crontabs(p_items jsonb) returns void
language sql volatile as $$
  update :SCHEMA._known_crontabs k set pattern = i ->> 'pattern', task = i ->> 'task'
    from jsonb_array_elements(p_items) i
   where k.identifier = i ->> 'identifier'
     and (k.pattern is distinct from i ->> 'pattern' or k.task is distinct from i ->> 'task');
$$;

-- Enqueues cron ticks, each at most once: a tick is taken by moving its item's last_execution
-- forward, which only one transaction can do. Ticks are {identifier, ts, backfilled, task,
-- payload, queue_name, priority, max_attempts, job_key, job_key_mode}. Returns the job ids.
create or replace function :SCHEMA._schedule_cron(p_ticks jsonb) returns bigint[]
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
