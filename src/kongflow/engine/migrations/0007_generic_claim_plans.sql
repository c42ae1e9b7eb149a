-- A claim's statements are planned once and the plans reused: left to choose, PostgreSQL made a
-- custom plan on every call, ~0.45 ms of a one-job claim's ~0.9 ms and so of every job's
-- enqueue-to-start latency. The generic plans take the same index paths (sequential and bitmap
-- scans are off inside the claim); burn-down throughput is unchanged.
alter function :SCHEMA._claim_jobs(text, integer, text[], text[], text[])
  set plan_cache_mode = force_generic_plan;
