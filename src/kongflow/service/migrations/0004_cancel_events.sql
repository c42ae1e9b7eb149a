-- A delayed event can be cancelled before it is delivered (trigger.dev's cancelEvent).
alter table :SCHEMA.event_records add column cancelled_at timestamptz;
