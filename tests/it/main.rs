//! Integration tests: one binary, run against the real PostgreSQL and Kafka
//! that `scripts/dev` starts. Each test gets fresh databases and a fresh topic.

mod support;

mod admin;
mod command;
mod infra;
mod query;
mod readme;
mod roles;
mod supervision;
