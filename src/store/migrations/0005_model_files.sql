-- Model files in each worker's cache (hub sources), with their download state.
CREATE TABLE model_files (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  worker_id INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
  source_key TEXT NOT NULL,
  backend TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL,               -- types::ToJson(ModelSource)
  local_path TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  state_message TEXT NOT NULL DEFAULT '',
  size_bytes INTEGER NOT NULL DEFAULT 0,
  downloaded_bytes INTEGER NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (worker_id, source_key, backend)
);
CREATE INDEX model_files_worker ON model_files (worker_id);
