-- The jobs service's domain (trigger.dev v2): organizations, projects, environments and their API
-- keys, endpoints, jobs and versions, events, runs with their status history, and subscriptions.
-- Ids are text (uuid) so the HTTP API can hand them out as they are. A trigger.dev "job" is a
-- job_definition here, since `jobs` is the engine's view of queued work.

create table :SCHEMA.organizations (
  id text primary key default gen_random_uuid()::text,
  slug text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]*$'),
  title text not null,
  created_at timestamptz not null default now()
);

create table :SCHEMA.projects (
  id text primary key default gen_random_uuid()::text,
  organization_id text not null references :SCHEMA.organizations on delete cascade,
  slug text not null check (slug ~ '^[a-z0-9][a-z0-9-]*$'),
  name text not null,
  created_at timestamptz not null default now(),
  unique (organization_id, slug)
);

-- The API key is kept (it keys webhook signatures and goes to endpoints, as in trigger.dev);
-- requests are authenticated by its SHA-256, so the lookup never compares secrets.
create table :SCHEMA.runtime_environments (
  id text primary key default gen_random_uuid()::text,
  project_id text not null references :SCHEMA.projects on delete cascade,
  organization_id text not null references :SCHEMA.organizations on delete cascade,
  slug text not null,
  type text not null check (type in ('DEVELOPMENT', 'STAGING', 'PRODUCTION')),
  api_key text not null,
  api_key_sha256 bytea not null unique,
  created_at timestamptz not null default now(),
  unique (project_id, slug)
);

create table :SCHEMA.endpoints (
  id text primary key default gen_random_uuid()::text,
  environment_id text not null references :SCHEMA.runtime_environments on delete cascade,
  slug text not null,
  url text not null,
  indexed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (environment_id, slug)
);

create table :SCHEMA.job_definitions (
  id text primary key default gen_random_uuid()::text,
  project_id text not null references :SCHEMA.projects on delete cascade,
  slug text not null,
  title text not null,
  created_at timestamptz not null default now(),
  unique (project_id, slug)
);

create table :SCHEMA.job_versions (
  id text primary key default gen_random_uuid()::text,
  job_id text not null references :SCHEMA.job_definitions on delete cascade,
  environment_id text not null references :SCHEMA.runtime_environments on delete cascade,
  endpoint_id text not null references :SCHEMA.endpoints on delete cascade,
  version text not null,
  event_name text not null,
  event_source text not null default 'trigger.dev',
  event_filter jsonb,
  metadata jsonb not null default '{}',
  created_at timestamptz not null default now(),
  unique (job_id, environment_id, version)
);

create table :SCHEMA.event_records (
  id text primary key default gen_random_uuid()::text,
  environment_id text not null references :SCHEMA.runtime_environments on delete cascade,
  event_id text not null,
  name text not null,
  source text not null default 'trigger.dev',
  payload jsonb not null default '{}',
  context jsonb not null default '{}',
  is_test boolean not null default false,
  deliver_at timestamptz not null default now(),
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  unique (environment_id, event_id)
);

create table :SCHEMA.job_runs (
  id text primary key default gen_random_uuid()::text,
  job_id text not null references :SCHEMA.job_definitions on delete cascade,
  version_id text not null references :SCHEMA.job_versions on delete cascade,
  environment_id text not null references :SCHEMA.runtime_environments on delete cascade,
  endpoint_id text not null references :SCHEMA.endpoints on delete cascade,
  event_id text not null references :SCHEMA.event_records on delete cascade,
  number int,  -- assigned when the run is queued
  status text not null default 'PENDING' check (status in (
    'PENDING', 'QUEUED', 'WAITING_ON_CONNECTIONS', 'PREPROCESSING', 'STARTED', 'EXECUTING',
    'WAITING_TO_CONTINUE', 'WAITING_TO_EXECUTE', 'SUCCESS', 'FAILURE', 'TIMED_OUT', 'ABORTED',
    'CANCELED', 'UNRESOLVED_AUTH', 'INVALID_PAYLOAD')),
  output jsonb,
  is_test boolean not null default false,
  idempotency_key text,
  queued_at timestamptz,
  started_at timestamptz,
  completed_at timestamptz,
  execution_count int not null default 0,
  execution_duration_ms bigint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (job_id, number),
  unique (environment_id, idempotency_key)
);

create index job_runs_environment on :SCHEMA.job_runs (environment_id, created_at desc);

-- Next run number per job; a row lock makes concurrent numbering safe.
create table :SCHEMA.job_run_counters (
  job_id text primary key references :SCHEMA.job_definitions on delete cascade,
  last_number int not null default 0
);

create table :SCHEMA.run_status_history (
  id bigint generated always as identity primary key,
  run_id text not null references :SCHEMA.job_runs on delete cascade,
  status text not null,
  detail jsonb,
  at timestamptz not null default clock_timestamp()
);

create index run_status_history_run on :SCHEMA.run_status_history (run_id, id);

create table :SCHEMA.run_subscriptions (
  id text primary key default gen_random_uuid()::text,
  run_id text not null references :SCHEMA.job_runs on delete cascade,
  url text not null,
  event text not null check (event in ('SUCCESS', 'FAILURE')),
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  unique (run_id, url, event)
);
