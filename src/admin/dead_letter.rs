//! `dead-letter`: lists the live generation's parked messages and replays
//! them through the projector's decode and apply path.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::SecondsFormat;
use serde::Serialize;

use crate::{
    admin::{AdminError, live_generation, read_pool},
    config::AdminSettings,
    query::{
        apply::{self, Replayed},
        generation::{GenerationState, WriteCondition},
    },
};

/// One parked message.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterEntry {
    /// Its id, for `replay --id`.
    pub id: i64,
    /// Where it was consumed.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, as text when UTF-8, else base64.
    pub key: Option<String>,
    /// Size of its value in bytes.
    pub value_bytes: Option<usize>,
    /// Why it was parked.
    pub error: String,
    /// When it was parked.
    pub dead_lettered_at: String,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The one with this id.
    One(i64),
    /// Every one, oldest first.
    All,
}

/// What became of one replayed dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    /// Its id.
    pub id: i64,
    /// `applied`, `duplicate`, `parked`, `still failing` or `not found`.
    pub outcome: String,
    /// Why it still fails.
    pub reason: Option<String>,
}

impl ReplayResult {
    /// Whether it was removed from the dead-letter table.
    pub fn removed(&self) -> bool {
        matches!(self.outcome.as_str(), "applied" | "duplicate" | "parked")
    }
}

/// The live generation's dead letters, oldest first.
pub async fn list(settings: &AdminSettings) -> Result<Vec<DeadLetterEntry>, AdminError> {
    let read = read_pool(settings).await?;
    let (_, read_model) = live_generation(&read).await?;
    Ok(read_model
        .dead_letters()
        .await?
        .into_iter()
        .map(|stored| DeadLetterEntry {
            id: stored.id,
            topic: stored.topic,
            partition: stored.letter.partition,
            offset: stored.letter.offset,
            key: stored.letter.key.map(|k| match String::from_utf8(k) {
                Ok(text) => text,
                Err(e) => format!("base64:{}", STANDARD.encode(e.into_bytes())),
            }),
            value_bytes: stored.letter.value.map(|v| v.len()),
            error: stored.letter.error,
            dead_lettered_at: stored
                .dead_lettered_at
                .to_rfc3339_opts(SecondsFormat::Secs, true),
        })
        .collect())
}

/// Replays the selected dead letters of the live generation; each one that
/// applies is removed in the same transaction.
pub async fn replay(
    settings: &AdminSettings,
    selection: Selection,
) -> Result<Vec<ReplayResult>, AdminError> {
    let read = read_pool(settings).await?;
    let (live, read_model) = live_generation(&read).await?;
    let ids = match selection {
        Selection::One(id) => vec![id],
        Selection::All => read_model
            .dead_letters()
            .await?
            .iter()
            .map(|d| d.id)
            .collect(),
    };
    let condition = WriteCondition {
        generation: live.generation,
        state: GenerationState::Live,
    };
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let replayed = apply::replay_dead_letter(&read_model, Some(condition), id).await?;
        let (outcome, reason) = match replayed {
            Replayed::Applied(summary) if summary.applied > 0 => ("applied", None),
            Replayed::Applied(summary) if summary.parked > 0 => ("parked", None),
            Replayed::Applied(_) => ("duplicate", None),
            Replayed::StillFailing(reason) => ("still failing", Some(reason)),
            Replayed::NotFound => ("not found", None),
        };
        results.push(ReplayResult {
            id,
            outcome: outcome.into(),
            reason,
        });
    }
    Ok(results)
}
