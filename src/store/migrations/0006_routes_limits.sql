-- Model routes (issue 5): a public model name → one or more deployments (models) of the same
-- project, each with a weight. Weight 0: used only as a fallback, after the weighted targets, in
-- `position` order. The route's name is unique in its project and must not be a model's name there
-- (checked by the API).
CREATE TABLE model_routes (
  id INTEGER PRIMARY KEY,
  project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (project_id, name)
);

CREATE TABLE model_route_targets (
  route_id BIGINT NOT NULL REFERENCES model_routes (id) ON DELETE CASCADE,
  model_id BIGINT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
  weight BIGINT NOT NULL,
  position BIGINT NOT NULL,  -- order within the route (fallbacks are tried in this order)
  PRIMARY KEY (route_id, model_id)
);
CREATE INDEX model_route_targets_model_id ON model_route_targets (model_id);

-- Gateway limits per API key and per project (issue 5): a JSON object with any of
-- requests_per_minute, tokens_per_minute, max_concurrent, tokens_per_day, tokens_per_month
-- (integers ≥ 0). NULL or a missing field: unlimited.
ALTER TABLE api_keys ADD COLUMN limits TEXT;
ALTER TABLE projects ADD COLUMN limits TEXT;
