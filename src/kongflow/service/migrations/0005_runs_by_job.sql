-- A job's runs, newest first, for trigger.dev's getRuns (keyset pagination by created_at, id).
create index job_runs_by_job on :SCHEMA.job_runs (job_id, environment_id, created_at desc, id desc);
