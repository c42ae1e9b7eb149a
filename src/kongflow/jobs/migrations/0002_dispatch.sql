-- Event dispatch and the wire protocol: a job version may listen to several event names
-- (trigger.dev's `name: string | string[]`), and an event carries the timestamp its sender gave.

alter table :SCHEMA.job_versions add column event_names text[];
update :SCHEMA.job_versions set event_names = array[event_name];
alter table :SCHEMA.job_versions alter column event_names set not null;
alter table :SCHEMA.job_versions drop column event_name;

create index job_versions_environment on :SCHEMA.job_versions (environment_id, job_id, created_at desc);

alter table :SCHEMA.event_records add column "timestamp" timestamptz not null default now();

-- Runs started by an event, found when a dispatch is retried so it never starts a run twice.
create index job_runs_event on :SCHEMA.job_runs (event_id, version_id);

create index run_subscriptions_pending on :SCHEMA.run_subscriptions (run_id, event)
  where delivered_at is null;
