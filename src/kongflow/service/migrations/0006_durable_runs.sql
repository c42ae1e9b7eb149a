-- Durable runs (trigger.dev v2's io tasks): a run's tasks, created by idempotency key while it
-- executes and sent back to the endpoint on each re-execution; its io statuses; the executions
-- it yielded; an environment's key-value store; and the schedules of scheduled jobs.

create table :SCHEMA.tasks (
  id text primary key default gen_random_uuid()::text,
  -- Creation order, for the cached tasks sent back and their cursor.
  position bigint generated always as identity unique,
  run_id text not null references :SCHEMA.job_runs on delete cascade,
  idempotency_key text not null,
  display_key text,
  name text not null,
  icon text,
  description text,
  status text not null check (status in (
    'PENDING', 'WAITING', 'RUNNING', 'COMPLETED', 'ERRORED', 'CANCELED')),
  noop boolean not null default false,
  params jsonb,
  output jsonb,
  error text,
  properties jsonb,
  output_properties jsonb,
  style jsonb,
  operation text,
  parent_id text references :SCHEMA.tasks on delete cascade,
  parallel boolean not null default false,
  attempts int not null default 1,
  retry_at timestamptz,
  delay_until timestamptz,
  started_at timestamptz,
  completed_at timestamptz,
  created_at timestamptz not null default now(),
  unique (run_id, idempotency_key)
);

create index tasks_parent on :SCHEMA.tasks (parent_id) where parent_id is not null;

alter table :SCHEMA.job_runs add column yielded_executions text[] not null default '{}';

-- io.createStatus: one row per key, with the history of its updates.
create table :SCHEMA.run_io_statuses (
  run_id text not null references :SCHEMA.job_runs on delete cascade,
  key text not null,
  position bigint generated always as identity,
  label text not null,
  state text check (state in ('loading', 'success', 'failure')),
  data jsonb,
  history jsonb not null default '[]',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (run_id, key)
);

-- io.store / client.store: string values by key, per environment.
create table :SCHEMA.key_values (
  environment_id text not null references :SCHEMA.runtime_environments on delete cascade,
  key text not null,
  value text not null,
  updated_at timestamptz not null default now(),
  primary key (environment_id, key)
);

-- Scheduled jobs (intervalTrigger, cronTrigger): one schedule per job version, replaced on each
-- index. Each tick is an event whose id names the schedule and the tick, so it runs once.
create table :SCHEMA.schedules (
  id text primary key default gen_random_uuid()::text,
  version_id text not null unique references :SCHEMA.job_versions on delete cascade,
  kind text not null check (kind in ('interval', 'cron')),
  expression text not null,
  active boolean not null default true,
  last_tick timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- onSuccess / onFailure: the endpoint asks (x-trigger-run-metadata) to be told of the outcome;
-- that notification is a RUN_NOTIFICATION request to the endpoint, not a signed webhook.
alter table :SCHEMA.run_subscriptions add column recipient_method text not null default 'WEBHOOK'
  check (recipient_method in ('WEBHOOK', 'ENDPOINT'));
alter table :SCHEMA.run_subscriptions drop constraint run_subscriptions_run_id_url_event_key;
alter table :SCHEMA.run_subscriptions add unique (run_id, url, event, recipient_method);
