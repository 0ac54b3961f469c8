-- PLACEHOLDER, to be replaced by the engine-secrets branch's own 0011_engine_secrets.sql when the
-- two branches meet (take theirs). It exists only because migrations must be numbered without
-- gaps (SqliteStoreTest.EmbeddedMigrationsAreContiguous, and Migrate skips any version at or
-- below the database's current one) and this branch's 0012 was numbered after it.
SELECT 1;
