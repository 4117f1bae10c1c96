//! The query side: `order-query` projects the events topic into
//! read-optimised PostgreSQL tables and answers `orders.v1.OrderQueries` from
//! them.
//!
//! - `app`: start-up (`Application::build` / `run_until_stopped`).
//! - `grpc`: the edge; parses requests, maps results and errors to gRPC.
//! - `projector`: Kafka → tables, one statement per batch with the positions;
//!   its consumer (`projector::consumer`) and metrics (`projector::metrics`).
//! - `apply`: the one apply path (decode, fold, write) of the projector, the
//!   rebuild and dead-letter replays, with the states kept between batches.
//! - `read_model`: the tables of one generation, one module per table.
//! - `control`: the generation states and the condition every write checks.
//! - `generation`: the generations of the projection and the live one; a
//!   rebuild fills a new generation beside the live one and switches atomically.
//! - `cache`: recently projected orders served without a database round trip.
//! - `liveness`: tells a projector consumer that librdkafka has wedged.
//! - `announce`: what a projector commit announces and its NOTIFY payload form.
//! - `watch`: LISTEN/NOTIFY fan-out that wakes read-your-writes waiters and
//!   the streams of `live`.
//! - `live`: `WatchOrder` and `WatchOrders` streams and their limits.
//! - `watchdog`: tells a stalled projection (lag, positions standing still) for health.
//! - `segments`: the bounded map of orders the kept states and the cache use.
//! - `page_token`: opaque, versioned, filter-bound page tokens.
//! - `request`: the query requests parsed at the edge (pure).
//! - `reply`: the proto forms of what reads return (an order, freshness).

pub mod announce;
pub mod app;
pub mod apply;
pub mod cache;
pub mod control;
pub mod error;
pub mod generation;
pub mod grpc;
pub mod live;
pub mod liveness;
pub mod page_token;
pub mod projector;
pub mod read_model;
pub mod reply;
pub mod request;
pub mod segments;
pub mod watch;
pub mod watchdog;

pub use app::Application;
pub use error::QueryError;
pub use generation::{Generations, LiveProjection};
pub use projector::{Projector, ProjectorMetrics, StepOutcome};
pub use read_model::ReadModel;
