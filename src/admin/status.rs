//! `status`: where the pipeline stands: the topic's end per partition against
//! the live projection's positions, the outbox backlog, the relay leader, dead
//! letters and the projection generations. `Watcher` reads it again and
//! again over the same connections, with the rates between two readings
//! (`orderctl status --watch`).

use std::{collections::HashMap, time::Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::{
    admin::{AdminError, live_generation, read_pool, topic::TopicOffsets, write_pool},
    command::{relay::RELAY_LOCK_KEY, store},
    config::AdminSettings,
    query::{Generations, ReadModel, generation::Generation},
};

/// One partition of the topic.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: i32,
    /// Its end offset (high watermark).
    pub end_offset: i64,
    /// The live projection's next offset, if it has one.
    pub position: Option<i64>,
    /// Messages not yet applied.
    pub lag: i64,
}

/// The process whose connection holds the relay's advisory lock.
#[derive(Debug, Clone, Serialize)]
pub struct RelayLeader {
    /// Backend pid of its lock connection.
    pub backend_pid: i32,
    /// `application_name` of that connection (`orders-relay host=… pid=…`).
    pub application_name: String,
    /// Its client address, if over TCP.
    pub client_addr: Option<String>,
    /// When that connection was opened (leading since about then).
    pub since: Option<String>,
}

/// One projection generation.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationStatus {
    /// Its number.
    pub generation: i32,
    /// Its schema.
    pub schema: String,
    /// building, live, retired or failed.
    pub state: String,
    /// topic or store.
    pub source: String,
    /// When it was created.
    pub created_at: String,
    /// When it became live.
    pub switched_at: Option<String>,
    /// When its schema was dropped.
    pub dropped_at: Option<String>,
}

impl From<&Generation> for GenerationStatus {
    fn from(g: &Generation) -> Self {
        Self {
            generation: g.generation,
            schema: g.schema.clone(),
            state: g.state.to_string(),
            source: g.source.to_string(),
            created_at: rfc3339(g.created_at),
            switched_at: g.switched_at.map(rfc3339),
            dropped_at: g.dropped_at.map(rfc3339),
        }
    }
}

/// Everything `orderctl status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The events topic.
    pub topic: String,
    /// Per partition: end, live position, lag.
    pub partitions: Vec<PartitionStatus>,
    /// Sum of the partitions' lag.
    pub lag: i64,
    /// Events committed but not yet acknowledged by Kafka.
    pub outbox_backlog: i64,
    /// Age of the oldest of them, in seconds.
    pub outbox_oldest_age_seconds: Option<f64>,
    /// The relay leader, if one holds the lock.
    pub relay_leader: Option<RelayLeader>,
    /// Messages parked in the live generation's dead-letter table.
    pub dead_letters: i64,
    /// The live generation.
    pub live_generation: GenerationStatus,
    /// Every generation, oldest first.
    pub generations: Vec<GenerationStatus>,
}

/// Reads the status of the system in `settings`.
pub async fn status(settings: &AdminSettings) -> Result<Status, AdminError> {
    Source::connect(settings).await?.read().await
}

/// The connections a status is read over.
struct Source {
    read: sqlx::PgPool,
    write: sqlx::PgPool,
    offsets: TopicOffsets,
}

impl Source {
    async fn connect(settings: &AdminSettings) -> Result<Self, AdminError> {
        Ok(Self {
            read: read_pool(settings).await?,
            write: write_pool(settings).await?,
            offsets: TopicOffsets::new(&settings.kafka)?,
        })
    }

    async fn read(&self) -> Result<Status, AdminError> {
        read_status(&self.read, &self.write, &self.offsets).await
    }
}

/// How fast the pipeline moved between two readings, per second.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Rates {
    /// Seconds between the readings.
    pub interval_seconds: f64,
    /// Events appended to the topic (the relay's publishing).
    pub published_per_second: f64,
    /// Events the live projection moved past.
    pub projected_per_second: f64,
    /// Change of the outbox backlog (negative: draining).
    pub outbox_change_per_second: f64,
    /// Change of the total lag (negative: catching up).
    pub lag_change_per_second: f64,
}

impl Rates {
    /// The rates from `before` to `after`, `seconds` apart; `None` across a
    /// generation switch (positions of different generations do not compare).
    pub fn between(before: &Status, after: &Status, seconds: f64) -> Option<Self> {
        if seconds <= 0.0 || before.live_generation.generation != after.live_generation.generation {
            return None;
        }
        let ends = |s: &Status| s.partitions.iter().map(|p| p.end_offset).sum::<i64>();
        let positions = |s: &Status| {
            s.partitions
                .iter()
                .map(|p| p.position.unwrap_or(0))
                .sum::<i64>()
        };
        let per_second = |a: i64, b: i64| (b - a) as f64 / seconds;
        Some(Self {
            interval_seconds: seconds,
            published_per_second: per_second(ends(before), ends(after)),
            projected_per_second: per_second(positions(before), positions(after)),
            outbox_change_per_second: per_second(before.outbox_backlog, after.outbox_backlog),
            lag_change_per_second: per_second(before.lag, after.lag),
        })
    }

    /// One line for the terminal.
    pub fn render(&self) -> String {
        format!(
            "rates (last {:.1} s): published {:.1}/s, projected {:.1}/s, outbox {:+.1}/s, lag {:+.1}/s\n",
            self.interval_seconds,
            self.published_per_second,
            self.projected_per_second,
            self.outbox_change_per_second,
            self.lag_change_per_second
        )
    }
}

/// Reads the status repeatedly over the same connections, with the rates
/// since the previous reading.
pub struct Watcher {
    source: Source,
    last: Option<(Status, Instant)>,
}

impl Watcher {
    /// Connects to the system in `settings`.
    pub async fn connect(settings: &AdminSettings) -> Result<Self, AdminError> {
        Ok(Self {
            source: Source::connect(settings).await?,
            last: None,
        })
    }

    /// The status now and the rates since the last call (none the first time).
    pub async fn next(&mut self) -> Result<(Status, Option<Rates>), AdminError> {
        let status = self.source.read().await?;
        let now = Instant::now();
        let rates = self.last.as_ref().and_then(|(before, at)| {
            Rates::between(before, &status, now.duration_since(*at).as_secs_f64())
        });
        self.last = Some((status.clone(), now));
        Ok((status, rates))
    }
}

async fn read_status(
    read: &sqlx::PgPool,
    write: &sqlx::PgPool,
    offsets: &TopicOffsets,
) -> Result<Status, AdminError> {
    let (live, read_model) = live_generation(read).await?;
    let ends = offsets.end_offsets().await?;
    let positions: HashMap<i32, i64> = read_model.all_positions(offsets.topic()).await?;
    let partitions: Vec<PartitionStatus> = ends
        .iter()
        .map(|(&partition, &end_offset)| {
            let position = positions.get(&partition).copied();
            PartitionStatus {
                partition,
                end_offset,
                position,
                lag: (end_offset - position.unwrap_or(0)).max(0),
            }
        })
        .collect();
    let outbox = store::outbox_backlog(write).await?;
    Ok(Status {
        topic: offsets.topic().to_owned(),
        lag: partitions.iter().map(|p| p.lag).sum(),
        partitions,
        outbox_backlog: outbox.events,
        outbox_oldest_age_seconds: outbox.oldest_age_seconds,
        relay_leader: relay_leader(write).await?,
        dead_letters: dead_letters(&read_model).await?,
        live_generation: GenerationStatus::from(&live),
        generations: Generations::new(read.clone())
            .all()
            .await?
            .iter()
            .map(GenerationStatus::from)
            .collect(),
    })
}

async fn dead_letters(read_model: &ReadModel) -> Result<i64, AdminError> {
    Ok(read_model.dead_letter_count().await?)
}

/// The connection holding the relay's advisory lock in this write database.
pub async fn relay_leader(write: &sqlx::PgPool) -> Result<Option<RelayLeader>, AdminError> {
    // A bigint advisory key shows in pg_locks as (classid, objid) = (high, low) 32 bits.
    let high = RELAY_LOCK_KEY >> 32;
    let low = RELAY_LOCK_KEY & 0xffff_ffff;
    // The view's columns all infer as nullable: pid and name are always set.
    let leader = sqlx::query!(
        r#"SELECT a.pid AS "pid!", a.application_name AS "application_name!",
                  host(a.client_addr) AS client_addr, a.backend_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.classid::int8 = $1 AND l.objid::int8 = $2"#,
        high,
        low,
    )
    .fetch_optional(write)
    .await?;
    Ok(leader.map(|row| RelayLeader {
        backend_pid: row.pid,
        application_name: row.application_name,
        client_addr: row.client_addr,
        since: row.backend_start.map(rfc3339),
    }))
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Status {
    /// The status as aligned text, for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!("topic {}\n", self.topic);
        out.push_str("  partition  end offset    position         lag\n");
        for p in &self.partitions {
            out.push_str(&format!(
                "  {:>9}  {:>10}  {:>10}  {:>10}\n",
                p.partition,
                p.end_offset,
                p.position.map_or_else(|| "-".to_owned(), |v| v.to_string()),
                p.lag
            ));
        }
        out.push_str(&format!("  total lag {}\n", self.lag));
        out.push_str(&format!(
            "outbox backlog {}{}\n",
            self.outbox_backlog,
            self.outbox_oldest_age_seconds
                .map(|s| format!(" (oldest {s:.1} s)"))
                .unwrap_or_default()
        ));
        match &self.relay_leader {
            Some(leader) => out.push_str(&format!(
                "relay leader {} (backend pid {}{}{})\n",
                leader.application_name,
                leader.backend_pid,
                leader
                    .client_addr
                    .as_ref()
                    .map(|a| format!(", from {a}"))
                    .unwrap_or_default(),
                leader
                    .since
                    .as_ref()
                    .map(|s| format!(", since {s}"))
                    .unwrap_or_default()
            )),
            None => out.push_str("relay leader none\n"),
        }
        out.push_str(&format!("dead letters {}\n", self.dead_letters));
        out.push_str(&format!(
            "live generation {} (schema {}, from {}{})\n",
            self.live_generation.generation,
            self.live_generation.schema,
            self.live_generation.source,
            self.live_generation
                .switched_at
                .as_ref()
                .map(|s| format!(", live since {s}"))
                .unwrap_or_default()
        ));
        for g in self.generations.iter().filter(|g| g.state != "live") {
            out.push_str(&format!(
                "  generation {} ({}) {}{}\n",
                g.generation,
                g.schema,
                g.state,
                if g.dropped_at.is_some() {
                    ", dropped"
                } else {
                    ""
                }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(ends: &[i64], positions: &[i64], outbox: i64, generation: i32) -> Status {
        let partitions: Vec<PartitionStatus> = ends
            .iter()
            .zip(positions)
            .enumerate()
            .map(|(p, (&end_offset, &position))| PartitionStatus {
                partition: p as i32,
                end_offset,
                position: Some(position),
                lag: end_offset - position,
            })
            .collect();
        let live = GenerationStatus {
            generation,
            schema: "read_model".into(),
            state: "live".into(),
            source: "topic".into(),
            created_at: String::new(),
            switched_at: None,
            dropped_at: None,
        };
        Status {
            topic: "orders".into(),
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
            outbox_backlog: outbox,
            outbox_oldest_age_seconds: None,
            relay_leader: None,
            dead_letters: 0,
            generations: vec![live.clone()],
            live_generation: live,
        }
    }

    #[test]
    fn rates_are_the_changes_per_second_within_one_generation() {
        let before = status(&[100, 50], &[90, 50], 10, 1);
        let after = status(&[140, 60], &[130, 60], 4, 1);
        let rates = Rates::between(&before, &after, 2.0).unwrap();
        assert_eq!(rates.published_per_second, 25.0);
        assert_eq!(rates.projected_per_second, 25.0);
        assert_eq!(rates.outbox_change_per_second, -3.0);
        assert_eq!(rates.lag_change_per_second, 0.0);
        assert!(rates.render().contains("published 25.0/s"));
        assert!(Rates::between(&before, &status(&[140, 60], &[0, 0], 4, 2), 2.0).is_none());
        assert!(Rates::between(&before, &after, 0.0).is_none());
    }
}
