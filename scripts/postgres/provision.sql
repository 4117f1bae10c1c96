-- The roles and databases of orders (ARCHITECTURE.md, "Database roles"), run
-- with psql as a superuser: by scripts/dev on every `up`, and by the postgres
-- image's entrypoint on a new cluster (docker-compose.yml mounts it into
-- /docker-entrypoint-initdb.d). Idempotent.
--
--   orders_migrator  owns the write database and the event store; runs the
--                    write migrations (`orderctl migrate`)
--   orders_command   order-command: appends events, outbox rows and
--                    idempotency keys, deletes outbox rows (migrations/write/0002)
--   orders_query     order-query: owns the read database and everything in it
--                    (it migrates it and creates the generations' schemas)
--   orders_admin     orderctl: reads the event store, queues republished
--                    events; acts as orders_query in the read database
--   orders_inventory inventory: owns the inventory database (it migrates it)
--   orders_payments  payments: owns the payments database (it migrates it)
--   orders_fulfilment order-fulfilment: owns the saga database (it migrates it)
--
-- None is a superuser or may create roles or databases. Passwords are not set
-- here: the dev stack trusts loopback connections, docker-compose sets them
-- in scripts/docker/init-db.sql.
\set ON_ERROR_STOP on
-- No notices for what already exists.
SET client_min_messages = warning;

DO $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY['orders_migrator', 'orders_command', 'orders_query', 'orders_admin', 'orders_inventory', 'orders_payments', 'orders_fulfilment'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', role);
        END IF;
        -- Also for a role an earlier version created with more.
        EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT', role);
    END LOOP;
END
$$;

-- orderctl acts as the query servers' role in the read database: a rebuild's
-- generation must belong to them. And it reads every session's statistics
-- (`status` names the relay leader's connection).
GRANT orders_query TO orders_admin;
GRANT pg_read_all_stats TO orders_admin;

SELECT 'CREATE DATABASE orders_write OWNER orders_migrator'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_write') \gexec
SELECT 'CREATE DATABASE orders_read OWNER orders_query'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_read') \gexec
ALTER DATABASE orders_write OWNER TO orders_migrator;
ALTER DATABASE orders_read OWNER TO orders_query;
SELECT 'CREATE DATABASE orders_inventory OWNER orders_inventory'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_inventory') \gexec
SELECT 'CREATE DATABASE orders_payments OWNER orders_payments'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_payments') \gexec
ALTER DATABASE orders_inventory OWNER TO orders_inventory;
ALTER DATABASE orders_payments OWNER TO orders_payments;
SELECT 'CREATE DATABASE orders_fulfilment OWNER orders_fulfilment'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_fulfilment') \gexec
ALTER DATABASE orders_fulfilment OWNER TO orders_fulfilment;
