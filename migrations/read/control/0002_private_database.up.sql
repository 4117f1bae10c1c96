-- Least privilege in the read database (ARCHITECTURE.md, "Database roles"):
-- only its owner (the query servers' role), the roles that are members of it
-- (orderctl's admin role) and superusers may connect. The projection is
-- derived data that the owner rebuilds from the event store; no other role
-- needs it.
--
-- Only the database's owner can revoke what PUBLIC got by default; for any
-- other role this is a no-op with a warning, and the database stays as its
-- owner set it up.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;
