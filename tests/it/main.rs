//! Integration tests: one binary, run against the real PostgreSQL and Kafka
//! that `scripts/dev` starts. Each test gets fresh databases and a fresh topic.

mod support;

mod admin;
mod auth;
mod command;
mod fulfilment;
mod infra;
mod inventory;
mod kafka_acl;
mod limits;
mod observability;
mod payments;
mod query;
mod readme;
mod roles;
mod supervision;
mod tls;
