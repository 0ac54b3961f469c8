-- User-defined inference backends (/v2/backends).
--
-- Portable SQL, same conventions as 0001_init.sql. A row named like a built-in backend
-- ("llama.cpp") holds only the versions users added to it; any other row is a whole custom
-- backend. `spec` is the backend's JSON (engines::ToJson), validated by the API before it is
-- stored. Models refer to backends by name (inside models.spec), so the store checks on delete
-- that no model still uses the backend or version.

CREATE TABLE backends (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  spec TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
