-- Run once by the postgres image's entrypoint (docker-compose.yml mounts this
-- file into /docker-entrypoint-initdb.d). POSTGRES_USER=orders is the superuser.
CREATE DATABASE orders_write OWNER orders;
CREATE DATABASE orders_read OWNER orders;
