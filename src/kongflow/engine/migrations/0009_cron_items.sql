-- What each known cron item is (its pattern and task, as the workers running it last described
-- it), so that a dashboard can show when it next fires.
alter table :SCHEMA._known_crontabs add column pattern text;
alter table :SCHEMA._known_crontabs add column task text;
