-- Claims and settles steer the planner away from sequential scans (stale statistics on a table
-- that churns); that inflates the plan's cost past jit_above_cost, and on servers built with
-- LLVM every call then spent 80-120 ms compiling a plan that runs in under a millisecond.
alter function :SCHEMA._claim_jobs(text, integer, text[], text[], text[]) set jit = off;
alter function :SCHEMA._settle_jobs(text, jsonb, boolean) set jit = off;
