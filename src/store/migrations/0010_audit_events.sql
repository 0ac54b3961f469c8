-- The audit trail (docs/security.md "Audit trail", ADR 0034): one row per state-changing /v2
-- call and per sign-in, append-only, each row's hash = SHA-256(prev_hash + canonical row), so
-- that an altered or deleted row breaks the chain. Request bodies are never stored.
CREATE TABLE audit_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,                 -- unix milliseconds
  actor_kind TEXT NOT NULL,            -- user | api_key | worker | anonymous
  actor_id INTEGER,                    -- user id, API key id or worker id
  actor_name TEXT NOT NULL DEFAULT '', -- username (for keys: the creator's; for sign-in: as tried)
  method TEXT NOT NULL,
  route TEXT NOT NULL,                 -- the route pattern, e.g. /v2/models/{id}
  resource TEXT NOT NULL,
  resource_id TEXT NOT NULL DEFAULT '',
  project_id INTEGER,
  status INTEGER NOT NULL,
  client_address TEXT NOT NULL DEFAULT '',
  request_id TEXT NOT NULL DEFAULT '',
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events(at);
CREATE INDEX audit_events_actor ON audit_events(actor_name);
CREATE INDEX audit_events_project ON audit_events(project_id);

-- Where the chain starts after pruning: the id and hash of the last pruned row (one row, id 1).
CREATE TABLE audit_anchor (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  last_pruned_id INTEGER NOT NULL,
  last_pruned_hash TEXT NOT NULL
);
