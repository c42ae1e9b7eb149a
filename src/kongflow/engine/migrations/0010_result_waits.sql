-- Who waits for a job's outcome (Client.wait_for): settling, cancelling, failing or deleting a
-- job someone waits for announces it on the schema's "settled" channel. Rows are removed by
-- their waiter, or by cleanup_jobs a day later (a waiter that died).
create table :SCHEMA._result_waits (
  id bigint generated always as identity primary key,
  job_id bigint not null,
  since timestamptz not null default now()
);
create index _result_waits_job on :SCHEMA._result_waits (job_id);
create index _result_waits_since on :SCHEMA._result_waits (since);
