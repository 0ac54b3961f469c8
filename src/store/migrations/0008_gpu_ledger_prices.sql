-- The GPU-time ledger (issue 16): one row per interval during which an instance was RUNNING on a
-- worker the server could hear, with what it held there. A multi-worker instance has one row per
-- worker it holds GPUs on. ended_at is NULL while the interval is open; last_seen follows the
-- worker's heartbeats, so an interval whose worker is lost (or that a crash left open) is closed
-- at the last moment the server knew the GPUs were held (docs/adr/0031-usage-gpu-ledger.md).
-- Written by the store where instance and worker rows are written (sqlite_gpu_ledger.cc).
CREATE TABLE gpu_intervals (
  id INTEGER PRIMARY KEY,
  instance_id INTEGER NOT NULL,
  deployment_id INTEGER NOT NULL,  -- the model the instance is a replica of
  model TEXT NOT NULL,             -- that model's name when the interval opened
  project_id INTEGER NOT NULL,
  worker_id INTEGER NOT NULL,
  gpu_type TEXT NOT NULL,          -- the worker's name for the GPUs ("NVIDIA H200"; mixed: joined by " + ")
  gpu_indexes TEXT NOT NULL,       -- JSON array of the worker's GPU indexes
  gpu_count INTEGER NOT NULL,
  vram_bytes INTEGER NOT NULL,     -- the claim's VRAM on those GPUs, all together
  started_at BIGINT NOT NULL,      -- unix ms
  ended_at BIGINT,                 -- unix ms; NULL while open
  last_seen BIGINT NOT NULL        -- unix ms: the worker's last heartbeat while open
);
CREATE INDEX gpu_intervals_open_instance ON gpu_intervals (instance_id) WHERE ended_at IS NULL;
CREATE INDEX gpu_intervals_open_worker ON gpu_intervals (worker_id) WHERE ended_at IS NULL;
CREATE INDEX gpu_intervals_instance_started ON gpu_intervals (instance_id, started_at);
CREATE INDEX gpu_intervals_started ON gpu_intervals (started_at);

-- The price table for cost reports, set by admins (PUT /v2/prices). unit: 'prompt_1m_tokens' and
-- 'completion_1m_tokens' (name = the model name clients ask for), 'gpu_hour' (name = a GPU type
-- as workers report it). Prices are in price_settings.currency; a missing row costs nothing.
CREATE TABLE prices (
  unit TEXT NOT NULL,
  name TEXT NOT NULL,
  price REAL NOT NULL CHECK (price >= 0),
  PRIMARY KEY (unit, name)
);
CREATE TABLE price_settings (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  currency TEXT NOT NULL,
  updated_at BIGINT NOT NULL
);
INSERT INTO price_settings (id, currency, updated_at) VALUES (1, 'USD', 0);
