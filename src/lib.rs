//! `orders`: an event-sourced, CQRS order service.
//!
//! The command side (`command`) decides commands with the pure `domain`,
//! appends events to a PostgreSQL event store and relays them to Kafka through
//! a transactional outbox. The query side (`query`) projects the topic into
//! read-optimised PostgreSQL tables and serves reads from them. `inventory`
//! and `payments` are the two services the fulfilment saga calls, each a
//! server over a database of its own (`database_server`).

pub mod admin;
pub mod auth;
pub mod codec;
pub mod command;
pub mod config;
pub mod database_server;
pub mod digest;
pub mod domain;
pub mod fulfilment;
#[cfg(test)]
mod fuzz;
pub mod inventory;
pub mod kafka;
pub mod limits;
pub mod metrics;
pub mod payments;
pub mod proto;
pub mod query;
pub mod roles;
pub mod secret;
pub mod server;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
