-- Vacuum and analyze the job tables by churn, not by size. Every job is inserted, updated when
-- claimed and deleted when done, so the hot table's dead rows pile up far faster than the
-- default 20%-of-the-table trigger notices on a table that stays small; stale statistics after
-- a bulk enqueue are what the claim otherwise has to defend against.
alter table :SCHEMA._jobs set (
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.05,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_analyze_threshold = 1000,
  autovacuum_vacuum_cost_delay = 1
);

-- Finished jobs arrive in a stream and leave in retention batches.
alter table :SCHEMA._finished_jobs set (
  autovacuum_vacuum_scale_factor = 0.05,
  autovacuum_vacuum_insert_scale_factor = 0.1,
  autovacuum_analyze_scale_factor = 0.05
);

-- Small tables updated all the time (heartbeats, queue rows): room on each page for
-- HOT updates, and vacuum after a few hundred dead rows.
alter table :SCHEMA._workers set (
  fillfactor = 70, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200
);
alter table :SCHEMA._job_queues set (
  fillfactor = 70, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200
);
