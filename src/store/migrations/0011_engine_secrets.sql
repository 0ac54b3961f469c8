-- The secret each instance's engine requires of its clients, as its worker reported it
-- (types::ModelInstance::engine_secret, docs/adr/0035-engine-secrets.md). The gateways send it
-- upstream; no /v2 answer carries it.
ALTER TABLE model_instances ADD COLUMN engine_secret TEXT NOT NULL DEFAULT '';
