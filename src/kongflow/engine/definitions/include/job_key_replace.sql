-- The job-key rule of replace and preserve_run_at, shared by add_job and add_jobs (spliced into
-- both where :INCLUDE(job_key_replace.sql) stands, so the hot paths pay no extra call): where an
-- available job (not running, not permanently failed) holds the key of the job being inserted,
-- that job is updated in place instead. Task, queue, payload, run_at, max_attempts, priority,
-- flags and headers are overwritten, array payloads concatenated, and run_at kept while
-- attempts = 0 if v_preserve_run_at; attempts reset, errors cleared, revision + 1. A key held by
-- a running or permanently failed job is not placed: no row is returned for it.
-- Uses: the insert's target aliased j, and the caller's variable v_preserve_run_at.
on conflict (key) where key is not null do update set
  queue_id = excluded.queue_id,
  task_identifier = excluded.task_identifier,
  payload = case
    when json_typeof(j.payload) = 'array' and json_typeof(excluded.payload) = 'array'
      then (j.payload::jsonb || excluded.payload::jsonb)::json
    else excluded.payload
  end,
  run_at = case
    when v_preserve_run_at and j.attempts = 0 then j.run_at
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
