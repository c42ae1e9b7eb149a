-- The job engine: queues, jobs, finished jobs, the public view and the SQL API.
--
-- :SCHEMA is replaced by the quoted schema name; :JOBS_CHANNEL and :CANCEL_CHANNEL by the NOTIFY
-- channel literals (new work is ready; a running job is asked to stop).
-- Names starting with an underscore are private: use the view and the functions.

-- Global concurrency limits for named queues, by exact name or pattern ('runs:*'). A queue with no
-- matching policy runs one job at a time (graphile-worker's serial queues).
create table :SCHEMA._queue_policies (
  pattern text primary key check (pattern <> ''),
  max_running int not null check (max_running >= 1)
);

create function :SCHEMA._queue_limit(p_queue_name text) returns int
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

-- One row per named queue that has (or recently had) jobs. Claimers lock these rows, so a queue's
-- limit holds across every worker; enqueuers hold a key-share lock so that garbage collection of
-- empty queues never removes a queue a job is being added to.
create table :SCHEMA._job_queues (
  id int generated always as identity primary key,
  queue_name text not null unique check (queue_name <> ''),
  max_running int not null check (max_running >= 1),
  paused boolean not null default false,
  created_at timestamptz not null default now()
);

-- The hot set: jobs waiting, scheduled, running or permanently failed. Completed and cancelled jobs
-- move to _finished_jobs, so the claim indexes only ever cover work still to do.
create table :SCHEMA._jobs (
  id bigint generated always as identity primary key,
  queue_id int,
  task_identifier text not null check (task_identifier <> ''),
  payload json not null default '{}',
  priority int not null default 0,
  run_at timestamptz not null default now(),
  attempts smallint not null default 0,
  max_attempts smallint not null default 25 check (max_attempts >= 1),
  key text check (key <> '' and length(key) <= 512),
  revision int not null default 0,
  flags jsonb,
  headers jsonb,  -- trace context carried from enqueue to execution
  last_error text,
  errors jsonb,
  locked_at timestamptz,
  locked_by text,
  cancel_requested_at timestamptz,
  -- Set when a running job is replaced, removed or cancelled: it finishes its attempt but never
  -- runs again, even if it snoozes or is given back at shutdown.
  retry_stopped boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  is_available boolean generated always as (locked_at is null and attempts < max_attempts) stored
);

create unique index _jobs_key on :SCHEMA._jobs (key) where key is not null;
-- Ready work, in claim order: jobs with no queue, and jobs of named queues (probed per queue).
create index _jobs_ready_unqueued on :SCHEMA._jobs (priority, run_at, id)
  where is_available and queue_id is null;
create index _jobs_ready_queued on :SCHEMA._jobs (queue_id, priority, run_at, id)
  where is_available and queue_id is not null;
-- Running jobs: counted per queue against its limit, scanned for rescue. Small by construction.
create index _jobs_running on :SCHEMA._jobs (queue_id) where locked_at is not null;

create table :SCHEMA._finished_jobs (
  id bigint primary key,
  queue_name text,
  task_identifier text not null,
  payload json not null,
  priority int not null,
  run_at timestamptz not null,
  attempts smallint not null,
  max_attempts smallint not null,
  key text,
  revision int not null,
  flags jsonb,
  last_error text,
  errors jsonb,
  state text not null check (state in ('completed', 'cancelled')),
  result json,
  created_at timestamptz not null,
  finished_at timestamptz not null default now()
);

create index _finished_jobs_finished_at on :SCHEMA._finished_jobs (finished_at);

-- graphile-worker's public columns, in its order, then kongflow's own.
create view :SCHEMA.jobs as
  select
    j.id, q.queue_name, j.task_identifier, j.payload, j.priority, j.run_at, j.attempts,
    j.max_attempts, j.last_error, j.created_at, j.updated_at, j.key, j.locked_at, j.locked_by,
    j.revision, j.flags,
    case
      when j.locked_at is not null then 'running'
      when j.attempts >= j.max_attempts then 'failed'
      when j.run_at > now() then 'scheduled'
      else 'available'
    end as state,
    j.errors, j.cancel_requested_at, null::timestamptz as finished_at, null::json as result,
    j.headers
  from :SCHEMA._jobs j
  left join :SCHEMA._job_queues q on q.id = j.queue_id;

-- Every job, hot or finished, in the shape of the public view.
create view :SCHEMA._all_jobs as
  select * from :SCHEMA.jobs
  union all
  select
    f.id, f.queue_name, f.task_identifier, f.payload, f.priority, f.run_at, f.attempts,
    f.max_attempts, f.last_error, f.created_at, f.finished_at, f.key, null, null,
    f.revision, f.flags, f.state, f.errors, null, f.finished_at, f.result, null
  from :SCHEMA._finished_jobs f;

-- graphile-worker's job_spec, for add_jobs.
create type :SCHEMA.job_spec as (
  identifier text,
  payload json,
  queue_name text,
  run_at timestamptz,
  max_attempts int,
  job_key text,
  priority int,
  flags text[]
);

-- Rejects bad arguments with a message naming the argument (SQLSTATE 22023).
create function :SCHEMA._check_job_args(
  p_where text, p_identifier text, p_queue_name text, p_max_attempts int, p_job_key text,
  p_job_key_mode text
) returns void
language plpgsql immutable as $$
begin
  if p_identifier is null or p_identifier = '' then
    raise exception '%: identifier must be a non-empty task identifier', p_where
      using errcode = '22023';
  end if;
  if p_queue_name = '' then
    raise exception '%: queue_name must be null or non-empty', p_where using errcode = '22023';
  end if;
  if p_max_attempts is not null and (p_max_attempts < 1 or p_max_attempts > 32767) then
    raise exception '%: max_attempts must be between 1 and 32767, got %', p_where, p_max_attempts
      using errcode = '22023';
  end if;
  if p_job_key = '' or length(p_job_key) > 512 then
    raise exception '%: job_key must be 1 to 512 characters, got % characters',
      p_where, length(p_job_key) using errcode = '22023';
  end if;
  if p_job_key_mode is null
     or p_job_key_mode not in ('replace', 'preserve_run_at', 'unsafe_dedupe') then
    raise exception '%: job_key_mode must be replace, preserve_run_at or unsafe_dedupe, got %',
      p_where, coalesce(p_job_key_mode, 'null') using errcode = '22023';
  end if;
end
$$;

-- The ids of the named queues, created as needed and key-share locked until the transaction ends.
create function :SCHEMA._lock_queues(p_names text[]) returns int[]
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

create function :SCHEMA.add_job(
  identifier text,
  payload json default null,
  queue_name text default null,
  run_at timestamptz default null,
  max_attempts int default null,
  job_key text default null,
  priority int default null,
  flags text[] default null,
  job_key_mode text default 'replace',
  headers jsonb default null
) returns :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_queue_id int;
  v_flags jsonb := (select jsonb_object_agg(f, true) from unnest(flags) f);
  v_job :SCHEMA._jobs;
  v_out :SCHEMA.jobs;
begin
  perform :SCHEMA._check_job_args(
    'add_job', identifier, queue_name, max_attempts, job_key, job_key_mode);
  if queue_name is not null then
    v_queue_id := (:SCHEMA._lock_queues(array[queue_name]))[1];
  end if;

  loop
    if job_key is null then
      insert into :SCHEMA._jobs (
        queue_id, task_identifier, payload, run_at, max_attempts, priority, flags, headers)
      values (
        v_queue_id, identifier, coalesce(payload, '{}'), coalesce(run_at, now()),
        coalesce(max_attempts, 25), coalesce(priority, 0), v_flags, add_job.headers)
      returning * into v_job;
    elsif job_key_mode = 'unsafe_dedupe' then
      -- Whatever holds the key, in any state, is kept; nothing new is scheduled.
      insert into :SCHEMA._jobs as j (
        queue_id, task_identifier, payload, run_at, max_attempts, key, priority, flags, headers)
      values (
        v_queue_id, identifier, coalesce(payload, '{}'), coalesce(run_at, now()),
        coalesce(max_attempts, 25), job_key, coalesce(priority, 0), v_flags, add_job.headers)
      on conflict (key) where key is not null do update set
        revision = j.revision + 1,
        updated_at = now()
      returning * into v_job;
    else
      -- replace / preserve_run_at: an available job with the key is updated in place.
      insert into :SCHEMA._jobs as j (
        queue_id, task_identifier, payload, run_at, max_attempts, key, priority, flags, headers)
      values (
        v_queue_id, identifier, coalesce(payload, '{}'), coalesce(run_at, now()),
        coalesce(max_attempts, 25), job_key, coalesce(priority, 0), v_flags, add_job.headers)
      on conflict (key) where key is not null do update set
        queue_id = excluded.queue_id,
        task_identifier = excluded.task_identifier,
        payload = case
          when json_typeof(j.payload) = 'array' and json_typeof(excluded.payload) = 'array'
            then (j.payload::jsonb || excluded.payload::jsonb)::json
          else excluded.payload
        end,
        run_at = case
          when job_key_mode = 'preserve_run_at' and j.attempts = 0 then j.run_at
          else excluded.run_at
        end,
        max_attempts = excluded.max_attempts,
        priority = excluded.priority,
        flags = excluded.flags,
        headers = excluded.headers,
        revision = j.revision + 1,
        attempts = 0,
        last_error = null,
        errors = null,
        updated_at = now()
      where j.is_available
      returning * into v_job;

      if v_job.id is null then
        -- The key is held by a running or permanently failed job: that job keeps running but
        -- will not retry, and gives up the key to a new job (next turn of the loop).
        update :SCHEMA._jobs as j
           set key = null, attempts = j.max_attempts, retry_stopped = true, updated_at = now()
         where j.key = job_key and not j.is_available;
      end if;
    end if;
    exit when v_job.id is not null;
  end loop;

  if v_job.run_at <= now() then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  select * into v_out from :SCHEMA.jobs where id = v_job.id;
  return v_out;
end
$$;

-- Bulk insert with graphile-worker's add_jobs semantics: keys replace (or keep run_at while
-- attempts = 0 with job_key_preserve_run_at); within one call the last spec for a key wins and
-- array payloads for one key are concatenated in order. One NOTIFY per call.
create function :SCHEMA.add_jobs(
  specs :SCHEMA.job_spec[],
  job_key_preserve_run_at boolean default false
) returns setof :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_bad record;
  v_ids bigint[] := '{}';
  v_keys_left text[];
  v_batch_ids bigint[];
  v_batch_keys text[];
begin
  select s.ord, s.identifier, s.queue_name, s.max_attempts, s.job_key into v_bad
    from unnest(specs) with ordinality as s(
      identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags, ord)
   where s.identifier is null or s.identifier = '' or s.queue_name = ''
      or s.max_attempts < 1 or s.max_attempts > 32767
      or s.job_key = '' or length(s.job_key) > 512
   order by s.ord
   limit 1;
  if found then
    perform :SCHEMA._check_job_args(
      format('add_jobs: spec %s', v_bad.ord), v_bad.identifier, v_bad.queue_name,
      v_bad.max_attempts, v_bad.job_key, 'replace');
  end if;

  perform :SCHEMA._lock_queues(array(
    select distinct s.queue_name from unnest(specs) s where s.queue_name is not null));

  -- Jobs without a key: one insert.
  with inserted as (
    insert into :SCHEMA._jobs (
      queue_id, task_identifier, payload, run_at, max_attempts, priority, flags)
    select
      q.id, s.identifier, coalesce(s.payload, '{}'), coalesce(s.run_at, now()),
      coalesce(s.max_attempts, 25), coalesce(s.priority, 0),
      (select jsonb_object_agg(f, true) from unnest(s.flags) f)
    from unnest(specs) with ordinality as s(
      identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags, ord)
    left join :SCHEMA._job_queues q on q.queue_name = s.queue_name
    where s.job_key is null
    order by s.ord
    returning id
  )
  select coalesce(array_agg(id), '{}') into v_ids from inserted;

  -- Jobs with a key: upsert until every key is placed (a holder may start running meanwhile).
  -- Rows are locked in key order, so concurrent calls cannot deadlock; set operations keep
  -- large batches linear.
  v_keys_left := array(
    select distinct s.job_key from unnest(specs) s where s.job_key is not null order by 1);
  while cardinality(v_keys_left) > 0 loop
    perform 1 from :SCHEMA._jobs j join unnest(v_keys_left) k(key) on j.key = k.key
     where not j.is_available
     order by j.key
     for update of j;
    update :SCHEMA._jobs as j
       set key = null, attempts = j.max_attempts, retry_stopped = true, updated_at = now()
      from unnest(v_keys_left) k(key)
     where j.key = k.key and not j.is_available;

    with s as (
      select s.* from unnest(specs) with ordinality as s(
        identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags, ord)
      join unnest(v_keys_left) k(key) on s.job_key = k.key
    ),
    last_spec as (
      select distinct on (s.job_key) s.* from s order by s.job_key, s.ord desc
    ),
    mergeable as (
      select s.job_key from s group by s.job_key
      having count(*) > 1 and bool_and(coalesce(json_typeof(s.payload) = 'array', false))
    ),
    merged as (
      select s.job_key, json_agg(e.value order by s.ord, e.idx) as payload
        from s
        join mergeable using (job_key)
        cross join lateral json_array_elements(s.payload) with ordinality e(value, idx)
       group by s.job_key
    ),
    upserted as (
      insert into :SCHEMA._jobs as j (
        queue_id, task_identifier, payload, run_at, max_attempts, key, priority, flags)
      select
        q.id, l.identifier,
        case when mg.job_key is null then coalesce(l.payload, '{}')
             else coalesce(m.payload, '[]') end,
        coalesce(l.run_at, now()), coalesce(l.max_attempts, 25), l.job_key,
        coalesce(l.priority, 0), (select jsonb_object_agg(f, true) from unnest(l.flags) f)
      from last_spec l
      left join mergeable mg on mg.job_key = l.job_key
      left join merged m on m.job_key = l.job_key
      left join :SCHEMA._job_queues q on q.queue_name = l.queue_name
      order by l.job_key
      on conflict (key) where key is not null do update set
        queue_id = excluded.queue_id,
        task_identifier = excluded.task_identifier,
        payload = case
          when json_typeof(j.payload) = 'array' and json_typeof(excluded.payload) = 'array'
            then (j.payload::jsonb || excluded.payload::jsonb)::json
          else excluded.payload
        end,
        run_at = case
          when job_key_preserve_run_at and j.attempts = 0 then j.run_at
          else excluded.run_at
        end,
        max_attempts = excluded.max_attempts,
        priority = excluded.priority,
        flags = excluded.flags,
        headers = excluded.headers,
        revision = j.revision + 1,
        attempts = 0,
        last_error = null,
        errors = null,
        updated_at = now()
      where j.is_available
      returning j.id, j.key
    )
    select coalesce(array_agg(id), '{}'), coalesce(array_agg(key), '{}')
      into v_batch_ids, v_batch_keys
      from upserted;
    v_ids := v_ids || v_batch_ids;
    v_keys_left := array(
      select k from (select unnest(v_keys_left) except select unnest(v_batch_keys)) left_(k)
       order by k);
  end loop;

  if exists (select 1 from unnest(v_ids) u(id) join :SCHEMA._jobs j using (id)
              where j.run_at <= now()) then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  return query select j.* from unnest(v_ids) u(id) join :SCHEMA.jobs j using (id) order by j.id;
end
$$;

-- Finishes jobs that are not running: moves them from the hot set to _finished_jobs.
create function :SCHEMA._finish_jobs(p_ids bigint[], p_state text) returns bigint[]
language sql volatile as $$
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
  select coalesce(array_agg(id order by id), '{}') from archived
$$;

-- Marks jobs that are not running as completed (graphile-worker's complete_jobs).
create function :SCHEMA.complete_jobs(job_ids bigint[]) returns setof :SCHEMA._all_jobs
language plpgsql volatile as $$
declare
  v_ids bigint[] := :SCHEMA._finish_jobs(job_ids, 'completed');
begin
  return query select a.* from :SCHEMA._all_jobs a where a.id = any(v_ids) order by a.id;
end
$$;

create function :SCHEMA.permanently_fail_jobs(job_ids bigint[], error_message text default null)
returns setof :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_message text := coalesce(error_message, 'Manually marked as failed');
  v_ids bigint[];
begin
  with failed as (
    update :SCHEMA._jobs as j set
      last_error = v_message,
      errors = coalesce(j.errors, '[]') || jsonb_build_object(
        'at', now(), 'attempt', j.attempts, 'type', 'PermanentlyFailed', 'message', v_message),
      attempts = j.max_attempts,
      updated_at = now()
    where j.id = any(job_ids) and j.locked_at is null
    returning j.id
  )
  select coalesce(array_agg(id), '{}') into v_ids from failed;
  return query select * from :SCHEMA.jobs j where j.id = any(v_ids) order by j.id;
end
$$;

create function :SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null,
  priority int default null,
  attempts int default null,
  max_attempts int default null
) returns setof :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_ids bigint[];
begin
  if max_attempts is not null and (max_attempts < 1 or max_attempts > 32767) then
    raise exception 'reschedule_jobs: max_attempts must be between 1 and 32767, got %',
      max_attempts using errcode = '22023';
  end if;
  if attempts is not null and (attempts < 0 or attempts > 32767) then
    raise exception 'reschedule_jobs: attempts must be between 0 and 32767, got %',
      attempts using errcode = '22023';
  end if;
  with moved as (
    update :SCHEMA._jobs as j set
      run_at = coalesce(reschedule_jobs.run_at, j.run_at),
      priority = coalesce(reschedule_jobs.priority, j.priority),
      attempts = coalesce(reschedule_jobs.attempts, j.attempts),
      retry_stopped = j.retry_stopped and reschedule_jobs.attempts is null,
      max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts),
      updated_at = now()
    where j.id = any(job_ids) and j.locked_at is null
    returning j.id
  )
  select coalesce(array_agg(id), '{}') into v_ids from moved;
  if exists (select 1 from :SCHEMA.jobs j
              where j.id = any(v_ids) and j.state = 'available') then
    perform pg_notify(:JOBS_CHANNEL, '');
  end if;
  return query select * from :SCHEMA.jobs j where j.id = any(v_ids) order by j.id;
end
$$;

-- Deletes the job with this key if it is not running; a running one loses its key and will not
-- be retried.
create function :SCHEMA.remove_job(job_key text) returns :SCHEMA.jobs
language plpgsql volatile as $$
declare
  v_job :SCHEMA._jobs;
  v_out :SCHEMA.jobs;
begin
  select * into v_job from :SCHEMA._jobs j where j.key = remove_job.job_key for update;
  if v_job.id is null then
    return null;
  end if;
  if v_job.locked_at is null then
    select * into v_out from :SCHEMA.jobs j where j.id = v_job.id;
    delete from :SCHEMA._jobs j where j.id = v_job.id;
  else
    update :SCHEMA._jobs as j
       set key = null, attempts = j.max_attempts, retry_stopped = true, updated_at = now()
     where j.id = v_job.id;
    select * into v_out from :SCHEMA.jobs j where j.id = v_job.id;
  end if;
  return v_out;
end
$$;

-- Cancels a job: one that is not running is finished as cancelled at once; a running one is asked
-- to stop (its worker is notified) and will not be retried.
create function :SCHEMA.cancel_job(job_id bigint) returns :SCHEMA._all_jobs
language plpgsql volatile as $$
declare
  v_job :SCHEMA._jobs;
  v_out :SCHEMA._all_jobs;
begin
  select * into v_job from :SCHEMA._jobs j where j.id = cancel_job.job_id for update;
  if v_job.id is not null and v_job.locked_at is null then
    perform :SCHEMA._finish_jobs(array[v_job.id], 'cancelled');
  elsif v_job.id is not null then
    update :SCHEMA._jobs as j
       set cancel_requested_at = coalesce(j.cancel_requested_at, now()),
           attempts = j.max_attempts, retry_stopped = true, updated_at = now()
     where j.id = v_job.id;
    perform pg_notify(:CANCEL_CHANNEL, v_job.id::text);
  end if;
  select * into v_out from :SCHEMA._all_jobs a where a.id = cancel_job.job_id;
  return v_out;
end
$$;
