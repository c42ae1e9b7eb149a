-- Event dispatch and the wire protocol: a job version may listen to several event names
-- (trigger.dev's `name: string | string[]`), it is the job's latest when it was registered
-- last (an endpoint may roll back), and an event carries the timestamp its sender gave.

alter table :SCHEMA.job_versions add column event_names text[];
update :SCHEMA.job_versions set event_names = array[event_name];
alter table :SCHEMA.job_versions alter column event_names set not null;
alter table :SCHEMA.job_versions drop column event_name;
alter table :SCHEMA.job_versions add column enabled boolean not null default true;
alter table :SCHEMA.job_versions add column registered_at timestamptz not null default now();

create index job_versions_latest
  on :SCHEMA.job_versions (environment_id, job_id, registered_at desc);

alter table :SCHEMA.event_records add column "timestamp" timestamptz not null default now();

-- Runs started by an event, found when a dispatch is retried so it never starts a run twice.
create index job_runs_event on :SCHEMA.job_runs (event_id, version_id);

-- Unfinished runs, for the sweep that fails those whose execution died.
create index job_runs_unfinished on :SCHEMA.job_runs (updated_at)
  where status in ('QUEUED', 'EXECUTING', 'WAITING_TO_EXECUTE');

create index run_subscriptions_pending on :SCHEMA.run_subscriptions (run_id, event)
  where delivered_at is null;
