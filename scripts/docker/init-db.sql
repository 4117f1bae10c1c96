-- Run once by the postgres image's entrypoint, after 10-provision.sql
-- (scripts/postgres/provision.sql: the roles and databases; docker-compose.yml
-- mounts both into /docker-entrypoint-initdb.d). The roles' passwords, which
-- the URLs in docker-compose.yml carry: development values, for a laptop
-- only; a real deployment sets its own (ALTER ROLE ... PASSWORD).
ALTER ROLE orders_migrator PASSWORD 'migrator-dev';
ALTER ROLE orders_command PASSWORD 'command-dev';
ALTER ROLE orders_query PASSWORD 'query-dev';
ALTER ROLE orders_admin PASSWORD 'admin-dev';
ALTER ROLE orders_inventory PASSWORD 'inventory-dev';
ALTER ROLE orders_payments PASSWORD 'payments-dev';
ALTER ROLE orders_fulfilment PASSWORD 'fulfilment-dev';
