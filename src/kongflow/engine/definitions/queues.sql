-- Named queues: their limits (policies by name or pattern), their rows, pause and resume.

-- Whether a policy's pattern names a queue: the name itself, or with * standing for any text.
create or replace function :SCHEMA._pattern_matches(p_pattern text, p_name text) returns boolean
language sql immutable as $$
  select p_pattern = p_name
      or (strpos(p_pattern, '*') > 0
          and p_name like replace(replace(replace(replace(
                p_pattern, '\', '\\'), '%', '\%'), '_', '\_'), '*', '%'))
$$;

create or replace function :SCHEMA._queue_limit(p_queue_name text) returns int
language sql stable as $$
  select coalesce(
    (select p.max_running
       from :SCHEMA._queue_policies p
      where :SCHEMA._pattern_matches(p.pattern, p_queue_name)
      order by p.pattern = p_queue_name desc, length(p.pattern) desc
      limit 1),
    1)
$$;

-- The rate policy that applies to a queue name (exact name first, then the longest pattern), or
-- no row.
create or replace function :SCHEMA._queue_rate(p_queue_name text)
returns table (max_jobs int, per interval)
language sql stable as $$
  select p.max_jobs, p.per
    from :SCHEMA._rate_policies p
   where :SCHEMA._pattern_matches(p.pattern, p_queue_name)
   order by p.pattern = p_queue_name desc, length(p.pattern) desc
   limit 1
$$;

-- The ids of the named queues, created as needed and key-share locked until the transaction ends.
create or replace function :SCHEMA._lock_queues(p_names text[]) returns int[]
language plpgsql volatile as $$
declare
  v_names text[] := array(select distinct n from unnest(p_names) n where n is not null);
  v_ids int[];
begin
  loop
    v_ids := array(
      select q.id from :SCHEMA._job_queues q
       where q.queue_name = any(v_names)
       order by q.id
       for key share);
    exit when cardinality(v_ids) = cardinality(v_names);
    -- Some are missing (new, or just collected as empty): create them and look again.
    insert into :SCHEMA._job_queues (queue_name, max_running, rate_max, rate_per)
      select n, :SCHEMA._queue_limit(n), r.max_jobs, r.per
        from unnest(v_names) n
        left join lateral :SCHEMA._queue_rate(n) r on true
      on conflict (queue_name) do nothing;
  end loop;
  return v_ids;
end
$$;

-- Sets global limits by queue name or pattern ({"executions": 10, "runs:*": 1}); existing queues
-- pick them up at once.
create or replace function :SCHEMA.set_queue_limits(limits jsonb) returns void
language plpgsql volatile as $$
begin
  insert into :SCHEMA._queue_policies (pattern, max_running)
    select l.key, l.value::int from jsonb_each_text(limits) l
    on conflict (pattern) do update set max_running = excluded.max_running;
  update :SCHEMA._job_queues q set max_running = :SCHEMA._queue_limit(q.queue_name)
   where q.max_running <> :SCHEMA._queue_limit(q.queue_name);
end
$$;

-- Sets rate limits by queue name or pattern: {"emails": {"max_jobs": 100, "per": "1 minute"},
-- "api:*": {"max_jobs": 10, "per": "1 second"}}; null removes a pattern's limit. Existing queues
-- pick them up at once.
create or replace function :SCHEMA.set_rate_limits(limits jsonb) returns void
language plpgsql volatile as $$
begin
  delete from :SCHEMA._rate_policies p
   where p.pattern in (select l.key from jsonb_each(limits) l where jsonb_typeof(l.value) = 'null');
  insert into :SCHEMA._rate_policies (pattern, max_jobs, per)
    select l.key, (l.value ->> 'max_jobs')::int, (l.value ->> 'per')::interval
      from jsonb_each(limits) l
     where jsonb_typeof(l.value) <> 'null'
    on conflict (pattern) do update set max_jobs = excluded.max_jobs, per = excluded.per;
  update :SCHEMA._job_queues q set rate_max = r.max_jobs, rate_per = r.per
    from :SCHEMA._job_queues q2
    left join lateral :SCHEMA._queue_rate(q2.queue_name) r on true
   where q2.id = q.id
     and (q.rate_max, q.rate_per) is distinct from (r.max_jobs, r.per);
  perform pg_notify(:JOBS_CHANNEL, '');  -- a limit raised or removed may free work
end
$$;

create or replace function :SCHEMA.pause_queue(queue_name text) returns void
language sql volatile as $$
  insert into :SCHEMA._job_queues (queue_name, max_running, paused, rate_max, rate_per)
    select pause_queue.queue_name, :SCHEMA._queue_limit(pause_queue.queue_name), true,
           r.max_jobs, r.per
      from (select 1) one
      left join lateral :SCHEMA._queue_rate(pause_queue.queue_name) r on true
    on conflict (queue_name) do update set paused = true
$$;

create or replace function :SCHEMA.resume_queue(queue_name text) returns void
language plpgsql volatile as $$
begin
  update :SCHEMA._job_queues q set paused = false where q.queue_name = resume_queue.queue_name;
  perform pg_notify(:JOBS_CHANNEL, '');
end
$$;
