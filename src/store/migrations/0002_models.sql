-- Deployments (models) and their replicas (model instances).
--
-- Portable SQL, same conventions as 0001_init.sql. A model's full specification is kept as JSON
-- (types::ToJson without the server-owned fields) next to the columns that are queried or unique.
-- Instances keep their placement in columns and small JSON documents; worker_id is not a foreign
-- key: 0 means "not placed", and an instance outlives a deleted worker until it is rescheduled.

CREATE TABLE models (
  id INTEGER PRIMARY KEY,
  project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  replicas INTEGER NOT NULL DEFAULT 1,
  spec TEXT NOT NULL,  -- JSON, types::Model
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (project_id, name)
);

CREATE TABLE model_instances (
  id INTEGER PRIMARY KEY,
  model_id BIGINT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
  project_id BIGINT NOT NULL,
  name TEXT NOT NULL,
  state TEXT NOT NULL,
  state_message TEXT NOT NULL DEFAULT '',
  worker_id BIGINT NOT NULL DEFAULT 0,
  worker_name TEXT NOT NULL DEFAULT '',
  gpu_indexes TEXT NOT NULL DEFAULT '[]',          -- JSON array of ints
  port INTEGER NOT NULL DEFAULT 0,
  claim TEXT NOT NULL DEFAULT '{}',                -- JSON, types::ResourceClaim
  distributed_servers TEXT NOT NULL DEFAULT '[]',  -- JSON array of types::DistributedServer
  restart_count INTEGER NOT NULL DEFAULT 0,
  last_restart_at BIGINT,
  unschedulable_reasons TEXT NOT NULL DEFAULT '{}',  -- JSON object, worker name -> reason
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX model_instances_model_id ON model_instances (model_id);
CREATE INDEX model_instances_worker_id ON model_instances (worker_id);
CREATE INDEX model_instances_project_id ON model_instances (project_id);
