-- Named queues: their limits (policies by name or pattern), their rows, pause and resume.

create or replace function :SCHEMA._queue_limit(p_queue_name text) returns int
language sql stable as $$
  select coalesce(
    (select p.max_running
       from :SCHEMA._queue_policies p
      where p.pattern = p_queue_name
         or (strpos(p.pattern, '*') > 0
             and p_queue_name like replace(replace(replace(replace(
                   p.pattern, '\', '\\'), '%', '\%'), '_', '\_'), '*', '%'))
      order by p.pattern = p_queue_name desc, length(p.pattern) desc
      limit 1),
    1)
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
    insert into :SCHEMA._job_queues (queue_name, max_running)
      select n, :SCHEMA._queue_limit(n) from unnest(v_names) n
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

create or replace function :SCHEMA.pause_queue(queue_name text) returns void
language sql volatile as $$
  insert into :SCHEMA._job_queues (queue_name, max_running, paused)
    values (pause_queue.queue_name, :SCHEMA._queue_limit(pause_queue.queue_name), true)
    on conflict (queue_name) do update set paused = true
$$;

create or replace function :SCHEMA.resume_queue(queue_name text) returns void
language plpgsql volatile as $$
begin
  update :SCHEMA._job_queues q set paused = false where q.queue_name = resume_queue.queue_name;
  perform pg_notify(:JOBS_CHANNEL, '');
end
$$;
