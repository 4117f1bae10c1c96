//! `republish`: queues stored events for publication again, through the
//! outbox and the normal relay (which keeps per-order order); consumers skip
//! the versions they already applied.

use serde::Serialize;

use crate::{
    admin::{AdminError, write_pool},
    command::store,
    config::AdminSettings,
};

/// What `republish` queued.
#[derive(Debug, Clone, Serialize)]
pub struct Republished {
    /// First position asked for.
    pub from_position: i64,
    /// Last position asked for.
    pub to_position: i64,
    /// Events queued in the outbox.
    pub events: u64,
}

/// Queues the events with positions `from..=to` (to the last when `to` is none).
pub async fn republish(
    settings: &AdminSettings,
    from: i64,
    to: Option<i64>,
) -> Result<Republished, AdminError> {
    let to = to.unwrap_or(i64::MAX);
    if from < 1 || to < from {
        return Err(AdminError::Invalid(format!(
            "positions must satisfy 1 <= from <= to (got {from}..={to})"
        )));
    }
    let write = write_pool(settings).await?;
    let mut tx = write.begin().await?;
    let events = store::republish(&mut tx, from, to).await?;
    tx.commit().await?;
    Ok(Republished {
        from_position: from,
        to_position: to,
        events,
    })
}
