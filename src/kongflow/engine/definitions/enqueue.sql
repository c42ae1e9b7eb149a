-- Enqueueing: add_job, add_jobs and the job-key rules they share (the in-place replace of an
-- available job is include/job_key_replace.sql).

-- Rejects bad arguments with a message naming the argument (SQLSTATE 22023).
create or replace function :SCHEMA._check_job_args(
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

-- Running or permanently failed jobs holding these keys give them up: such a job finishes its
-- current attempt but is never retried, and the key goes to a new job. Holders are locked in key
-- order, so concurrent calls cannot deadlock.
create or replace function :SCHEMA._take_job_keys(p_keys text[]) returns void
language plpgsql volatile as $$
begin
  perform 1 from :SCHEMA._jobs j
   where j.key = any(p_keys) and not j.is_available
   order by j.key
   for update of j;
  update :SCHEMA._jobs as j
     set key = null, attempts = j.max_attempts, retry_stopped = true, updated_at = now()
   where j.key = any(p_keys) and not j.is_available;
end
$$;

create or replace function :SCHEMA.add_job(
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
  v_preserve_run_at boolean := job_key_mode = 'preserve_run_at';  -- for job_key_replace.sql
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
      :INCLUDE(job_key_replace.sql)
      returning * into v_job;
      if v_job.id is null then
        -- The key is held by a running or permanently failed job: it gives the key up to a new
        -- job (next turn of the loop).
        perform :SCHEMA._take_job_keys(array[job_key]);
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
create or replace function :SCHEMA.add_jobs(
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
  v_preserve_run_at boolean := job_key_preserve_run_at;  -- for job_key_replace.sql
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
  -- Set operations keep large batches linear.
  v_keys_left := array(
    select distinct s.job_key from unnest(specs) s where s.job_key is not null order by 1);
  while cardinality(v_keys_left) > 0 loop
    perform :SCHEMA._take_job_keys(v_keys_left);

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
      order by l.job_key  -- rows locked in key order: concurrent calls cannot deadlock
      :INCLUDE(job_key_replace.sql)
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
