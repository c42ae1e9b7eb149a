-- Workflows: jobs that wait for other jobs. A blocked job (pending_deps > 0) has run_at in year
-- 9999 (a date drivers can read, unlike 'infinity'), so no claim takes it; when its last
-- dependency settles, its run_at becomes its step's own (or now). Dependencies are edges; each is counted once, when its job settles.
alter table :SCHEMA._jobs add column pending_deps int not null default 0;

create table :SCHEMA._workflows (
  id bigint generated always as identity primary key,
  name text,
  created_at timestamptz not null default now()
);

create table :SCHEMA._workflow_steps (
  workflow_id bigint not null references :SCHEMA._workflows (id) on delete cascade,
  step text not null check (step <> ''),
  job_id bigint not null unique,
  run_at timestamptz,  -- the step's own run_at, applied when it is released
  run_if_failed boolean not null default false,  -- released, not cancelled, when a dependency fails
  primary key (workflow_id, step)
);

create table :SCHEMA._job_deps (
  depends_on bigint not null,
  job_id bigint not null,
  settled boolean not null default false,  -- counted against job_id's pending_deps
  primary key (depends_on, job_id)
);
create index _job_deps_job on :SCHEMA._job_deps (job_id);
-- What every settle probes: the edges still to count (small, whatever the history).
create index _job_deps_open on :SCHEMA._job_deps (depends_on) where not settled;
