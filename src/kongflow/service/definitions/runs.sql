-- Runs.

-- A run's number (its job's next) is assigned when its transaction commits, by a deferred
-- trigger: the job's counter row is then locked only for the commit itself. Taken when the run
-- is inserted, it would stay locked for the rest of the creating transaction, and concurrent
-- creations of one job's runs would wait on each other's round trips.
create or replace function :SCHEMA._number_run() returns trigger
language plpgsql volatile as $$
declare
  v_number int;
begin
  insert into :SCHEMA.job_run_counters as c (job_id, last_number) values (new.job_id, 1)
    on conflict (job_id) do update set last_number = c.last_number + 1
    returning c.last_number into v_number;
  update :SCHEMA.job_runs set number = v_number where id = new.id and number is null;
  return null;
end
$$;

drop trigger if exists job_runs_number on :SCHEMA.job_runs;
create constraint trigger job_runs_number after insert on :SCHEMA.job_runs
  deferrable initially deferred for each row when (new.number is null)
  execute function :SCHEMA._number_run();
