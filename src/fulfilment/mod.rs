//! Order fulfilment: the saga that takes a confirmed order through
//! Inventory, Payments and OrderCommands.
//!
//! - `saga`: the pure decisions (`decide`), tested given/when/then.
//! - `store`: the saga tables; each change is one transaction with its cause.
//! - `calls`: one step → one gRPC call with its key and deadline.
//! - `worker`: the consumer of the events topic and the executor of intents.
//! - `admin`: `fulfilment.v1.FulfilmentAdmin` over the store.
//! - `settings`, `app`: `order-fulfilment`'s settings and start-up.

pub mod admin;
pub mod app;
pub mod calls;
pub mod saga;
pub mod settings;
pub mod store;
pub mod worker;

/// The fulfilment database's migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/fulfilment");
