-- How each metered request ended (issue 18, ADR 0024): 'complete', or cut short by the client
-- ('client_disconnected'), the engine ('upstream_failed') or a crash of the gateway
-- ('gateway_crashed', recovered from its usage journal). Rows written before: 'complete'.
-- request_id was UNIQUE from 0003 on: replaying a journal inserts each request at most once.
ALTER TABLE usage_records ADD COLUMN finish TEXT NOT NULL DEFAULT 'complete';
