-- Rate limits for named queues, by exact name or pattern ('api:*': each matching queue its own
-- window): at most max_jobs job starts in any window of `per`. Kept on each queue's row like its
-- concurrency limit, so the claim reads them with the row it locks.
create table :SCHEMA._rate_policies (
  pattern text primary key check (pattern <> ''),
  max_jobs int not null check (max_jobs >= 1),
  per interval not null check (per > interval '0')
);
alter table :SCHEMA._job_queues add column rate_max int, add column rate_per interval;

-- The starts of rate-limited queues' jobs within their window, a row per claim (`jobs` started
-- at `started_at`); older ones are pruned by the claims of the same queue.
create table :SCHEMA._rate_starts (
  queue_id int not null,
  started_at timestamptz not null,
  jobs int not null check (jobs >= 1)
);
create index _rate_starts_queue on :SCHEMA._rate_starts (queue_id, started_at);
