-- Sessions listable by their users and admins (GET /v2/sessions): where and with what they were
-- opened, and when last used (written at most once a minute per session). API keys restricted to
-- client address ranges (allowed_cidrs: a JSON array of CIDR strings; NULL: any address).
-- docs/adr/0036-sign-in-lockout-and-trusted-proxies.md.
ALTER TABLE sessions ADD COLUMN last_used_at BIGINT;
ALTER TABLE sessions ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN allowed_cidrs TEXT;
