-- Rotated API keys: the old key keeps authenticating until its grace period ends (so clients
-- can move to the new one); only its SHA-256 is kept.
create table :SCHEMA.retired_api_keys (
  api_key_sha256 bytea primary key,
  environment_id text not null references :SCHEMA.runtime_environments on delete cascade,
  expires_at timestamptz not null
);

create index retired_api_keys_environment on :SCHEMA.retired_api_keys (environment_id);
