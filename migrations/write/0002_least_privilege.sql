-- Least privilege in the write database (ARCHITECTURE.md, "Database roles").
--
-- The tables belong to whoever runs the migrations (the migrator role): only
-- it, or a superuser, can alter them or drop the append-only triggers. The
-- servers and orderctl get exactly what their statements need, and nobody
-- else may connect.
--
-- The roles are cluster-wide and created beforehand (scripts/dev,
-- scripts/docker/init-db.sql); where one does not exist (a test's fresh
-- database on a server without them) it simply gets no grant. The grants name
-- the tables one by one: a table added by a later migration gets its grants
-- in that migration.
DO $$
DECLARE
    db text := current_database();
    -- Whether sqlx's bookkeeping table is here (not when a script applies
    -- these files with psql).
    bookkeeping boolean := to_regclass('_sqlx_migrations') IS NOT NULL;
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', db);

    -- order-command: the writer appends events, outbox rows and idempotency
    -- keys (reading them to decide); the relay reads the outbox and deletes
    -- what Kafka acknowledged. Nothing may update or delete an event, and
    -- DELETE is granted on the outbox only. Identity columns need no sequence
    -- grant; LISTEN/NOTIFY and advisory locks need no grant at all.
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_command') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO orders_command', db);
        GRANT SELECT, INSERT ON events, idempotency_keys TO orders_command;
        GRANT SELECT, INSERT, DELETE ON outbox TO orders_command;
        -- At start-up the server checks that the migrations are applied.
        IF bookkeeping THEN
            GRANT SELECT ON _sqlx_migrations TO orders_command;
        END IF;
    END IF;

    -- orderctl: reads the event store (verify, rebuild --from-store, status)
    -- and queues events for publication again (republish).
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_admin') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO orders_admin', db);
        GRANT SELECT ON events, outbox TO orders_admin;
        GRANT INSERT ON outbox TO orders_admin;
    END IF;
END
$$;
