-- Usage records written by the gateway's usage meter (one row per request), and a daily roll-up
-- maintained in the same transaction. No foreign keys: usage outlives keys, users and projects.
CREATE TABLE usage_records (
  id INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL UNIQUE,
  created_at BIGINT NOT NULL,
  api_key_id INTEGER NOT NULL,
  user_id INTEGER NOT NULL,
  project_id INTEGER NOT NULL,
  model TEXT NOT NULL,
  deployment_id INTEGER NOT NULL,
  instance_id INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL,
  ttft_ms REAL,
  duration_ms REAL NOT NULL,
  status INTEGER NOT NULL
);
CREATE INDEX usage_records_created_at ON usage_records (created_at);
CREATE INDEX usage_records_project_created_at ON usage_records (project_id, created_at);

CREATE TABLE usage_daily (
  day TEXT NOT NULL,  -- YYYY-MM-DD (UTC)
  project_id INTEGER NOT NULL,
  user_id INTEGER NOT NULL,
  api_key_id INTEGER NOT NULL,
  model TEXT NOT NULL,
  requests INTEGER NOT NULL,
  errors INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL,
  PRIMARY KEY (day, project_id, user_id, api_key_id, model)
);
