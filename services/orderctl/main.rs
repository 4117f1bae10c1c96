//! `orderctl`: the admin CLI. Reads the configuration the servers read, with
//! its own database URLs (the admin role's; the migrator's for `migrate`), and
//! calls `orders::admin`; this file only parses, prints and sets the exit code
//! (0: done and clean, 1: differences or messages still failing, 2: error).

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use orders::{
    admin::{
        self, RebuildOptions, VerifyOptions,
        dead_letter::{self, Selection},
        rebuild::{machine_line, summary_line},
    },
    config::AdminSettings,
};
use tracing_subscriber::EnvFilter;

/// Operates an `orders` deployment: status, verification, projection rebuilds,
/// republishing, dead letters and the write database's migrations.
#[derive(Debug, Parser)]
#[command(name = "orderctl", version)]
struct Cli {
    #[command(flatten)]
    settings: AdminSettings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per partition the topic's end, the live projection's position and the
    /// lag; the outbox backlog, the relay leader, dead letters and generations.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Folds every order's events from the event store and compares the
    /// result with the live projection, field by field. Exits 1 on any
    /// difference; orders behind only because of consumer lag are "lagging".
    Verify {
        /// First wait up to SECS for the outbox to drain and the projection to
        /// reach the end of the topic, then demand exact equality (no lagging).
        #[arg(long, value_name = "SECS")]
        wait_caught_up: Option<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Builds a new generation of the projection beside the live one (from
    /// the topic's beginning, or from the event store), verifies it and
    /// switches every reader to it atomically. Resumes an interrupted rebuild.
    Rebuild {
        /// Read history from the event store instead of the topic (for when
        /// retention or a lost topic cut it); the topic is read from the end
        /// offsets captured before the store.
        #[arg(long)]
        from_store: bool,
        /// After the switch, drop the schemas of retired generations.
        #[arg(long)]
        drop_old: bool,
    },
    /// Queues stored events (by position) for publication again; the relay
    /// publishes them in order and consumers skip versions they applied.
    Republish {
        /// First position.
        #[arg(long, value_name = "N")]
        from_position: i64,
        /// Last position (default: the last event).
        #[arg(long, value_name = "M")]
        to_position: Option<i64>,
    },
    /// Messages the projector could not apply (live generation).
    DeadLetter {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Applies the write database's migrations as the event store's owner
    /// (the migrator role); the command servers only check them at start.
    Migrate {
        /// The write database, as the role that owns the event store.
        #[arg(long = "database-url", env = "ORDERS_WRITE_MIGRATE_DATABASE_URL")]
        database_url: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Lists the parked messages.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Runs parked messages through the projector's decode and apply path
    /// again; each one that applies is removed, the others stay with the reason.
    Replay {
        /// The message to replay.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every parked message, oldest first.
        #[arg(long)]
        all: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,sqlx=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("orderctl: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = &cli.settings;
    match cli.command {
        Command::Status { json } => {
            let status = admin::status(settings).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            wait_caught_up,
            json,
        } => {
            let options = VerifyOptions {
                wait_caught_up: wait_caught_up.map(Duration::from_secs),
            };
            let report = admin::verify(settings, options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for difference in &report.differences {
                    println!("{difference}");
                }
                println!(
                    "checked {} orders and {} events against generation {} ({}): {} differences, \
                     {} lagging{}",
                    report.orders,
                    report.events,
                    report.generation,
                    report.schema,
                    report.differences.len(),
                    report.lagging.len(),
                    if report.dead_letters > 0 {
                        format!("; {} dead letters", report.dead_letters)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Rebuild {
            from_store,
            drop_old,
        } => {
            let options = RebuildOptions {
                from_store,
                drop_old,
                progress: std::io::stdout().is_terminal(),
            };
            let report = admin::rebuild(settings, options).await?;
            println!("{}", summary_line(&report));
            println!("{}", machine_line(&report));
            Ok(ExitCode::SUCCESS)
        }
        Command::Republish {
            from_position,
            to_position,
        } => {
            let queued = admin::republish(settings, from_position, to_position).await?;
            println!(
                "queued {} events (positions {}..={}) for publication",
                queued.events,
                queued.from_position,
                to_position.map_or_else(|| "end".to_owned(), |to| to.to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { database_url } => {
            let migrated = admin::migrate(&database_url).await?;
            if migrated.applied.is_empty() {
                println!(
                    "the write migrations are up to date (latest {})",
                    migrated.latest
                );
            } else {
                let applied: Vec<String> = migrated.applied.iter().map(i64::to_string).collect();
                println!(
                    "applied write migrations {} (latest {})",
                    applied.join(", "),
                    migrated.latest
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetter {
            command: DeadLetterCommand::List { json },
        } => {
            let letters = dead_letter::list(settings).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                println!("{} dead letters", letters.len());
                for l in &letters {
                    println!(
                        "{:>6}  {}[{}]@{}  key {}  {} bytes  {}  {}",
                        l.id,
                        l.topic,
                        l.partition,
                        l.offset,
                        l.key.as_deref().unwrap_or("-"),
                        l.value_bytes.unwrap_or(0),
                        l.dead_lettered_at,
                        l.error
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetter {
            command: DeadLetterCommand::Replay { id, all: _ },
        } => {
            let selection = id.map_or(Selection::All, Selection::One);
            let results = dead_letter::replay(settings, selection).await?;
            for r in &results {
                match &r.reason {
                    Some(reason) => println!("{:>6}  {}: {reason}", r.id, r.outcome),
                    None => println!("{:>6}  {}", r.id, r.outcome),
                }
            }
            let removed = results.iter().filter(|r| r.removed()).count();
            println!(
                "{removed} of {} replayed dead letters applied and removed",
                results.len()
            );
            Ok(if removed == results.len() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
