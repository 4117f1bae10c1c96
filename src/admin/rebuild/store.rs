//! Step 3 of a rebuild `--from-store`: the generation seeded from one
//! snapshot of the event store, in position order, by `STORE_WRITERS` writers.

use std::collections::HashMap;

use futures::TryStreamExt;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::{
    CHUNK_EVENTS, CHUNKS_IN_FLIGHT, STORE_WRITERS, WRITER_KEPT_STATES, progress::Progress,
    write_chunk,
};
use crate::{
    admin::{AdminError, topic::TopicOffsets},
    command::store,
    query::{
        QueryError, ReadModel,
        apply::{Incoming, OrderStates, Outcome},
        generation::WriteCondition,
    },
};

/// Seeds the new generation from the event store; returns the events applied.
pub(super) async fn seed_from_store(
    write: &PgPool,
    read_model: &ReadModel,
    condition: WriteCondition,
    offsets: &TopicOffsets,
    progress: &Progress,
) -> Result<u64, AdminError> {
    // The end offsets first: every event below them was committed before the
    // snapshot below is taken, so it is in it; every later one is consumed.
    let ends: HashMap<i32, i64> = offsets.end_offsets().await?.into_iter().collect();
    read_model.seed_positions(offsets.topic(), &ends).await?;
    // Orders are dealt to `STORE_WRITERS` lanes by id, each with a writer of
    // its own: an order's events stay in one lane, in position order.
    let (mut lanes, mut receivers) = (vec![], vec![]);
    for _ in 0..STORE_WRITERS {
        let (sender, receiver) = mpsc::channel::<Vec<Incoming>>(CHUNKS_IN_FLIGHT);
        lanes.push(sender);
        receivers.push(receiver);
    }
    // Reads (and decodes) the next chunks while the current ones are written.
    let reader = tokio::spawn({
        let (write, progress_bar) = (write.clone(), progress.bar.clone());
        async move {
            let mut tx = store::snapshot(&write).await?;
            Progress::store_on(&progress_bar, store::event_count(&mut tx).await?);
            let mut chunks: Vec<Vec<Incoming>> = (0..STORE_WRITERS).map(|_| vec![]).collect();
            {
                let mut events = std::pin::pin!(store::events_in_position_order(&mut tx));
                while let Some(event) = events.try_next().await? {
                    let item = Incoming::from_store(event.position, event.payload)?;
                    let lane = match &item {
                        Incoming::Event { meta, .. } => {
                            (meta.order_id.as_uuid().as_u128() % STORE_WRITERS as u128) as usize
                        }
                        Incoming::Dead(_) => 0,
                    };
                    chunks[lane].push(item);
                    if chunks[lane].len() == CHUNK_EVENTS
                        && lanes[lane]
                            .send(std::mem::take(&mut chunks[lane]))
                            .await
                            .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            for (chunk, lane) in chunks.into_iter().zip(&lanes) {
                if !chunk.is_empty() {
                    let _ = lane.send(chunk).await;
                }
            }
            tx.commit().await?;
            Ok::<_, AdminError>(())
        }
    });
    let read = std::sync::atomic::AtomicU64::new(0);
    let written = futures::future::try_join_all(receivers.iter_mut().map(|received| async {
        let mut applied = 0;
        let mut states = OrderStates::new(WRITER_KEPT_STATES);
        while let Some(chunk) = received.recv().await {
            let chunk_len = chunk.len() as u64;
            // The positions were stored above; the store's events do not move them.
            match write_chunk(read_model, condition, "", None, &chunk, &mut states).await? {
                Outcome::Committed { counts, .. } => applied += counts.applied,
                Outcome::Fenced => unreachable!("no position is moved"),
                Outcome::Closed => {
                    return Err(QueryError::GenerationClosed(condition.generation).into());
                }
            }
            let read = read.fetch_add(chunk_len, std::sync::atomic::Ordering::Relaxed);
            progress.stored(read + chunk_len);
        }
        Ok::<_, AdminError>(applied)
    }))
    .await;
    drop(receivers);
    let reading = reader
        .await
        .map_err(|e| AdminError::Invalid(format!("store reader failed: {e}")))?;
    let applied = written?.iter().sum();
    reading?;
    Ok(applied)
}
