//! `orderctl`: the admin CLI. Reads the configuration the servers read, with
//! its own database URLs (the admin role's; the migrator's for `migrate`), and
//! calls `orders::admin`; this file only parses, prints and sets the exit code
//! (0: done and clean, 1: differences or messages still failing, 2: error).

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

mod saga;
use orders::{
    admin::{
        self, RebuildOptions, VerifyOptions,
        dead_letter::{self, Selection},
        rebuild::{machine_line, summary_line},
    },
    auth::{self, TokenRequest},
    config::{AdminSettings, DEFAULT_AUTH_AUDIENCE, DEFAULT_AUTH_ISSUER},
    kafka::{self, TopicStatus},
    tls,
};
use tracing_subscriber::EnvFilter;

/// Operates an `orders` deployment: status, verification, projection rebuilds,
/// republishing, dead letters, the write database's migrations and the
/// fulfilment sagas.
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
        /// Read it again every interval until interrupted, with the rates
        /// since the previous reading: redrawn in place on a terminal, else
        /// one block (or, with --json, one JSON line) per reading.
        #[arg(long)]
        watch: bool,
        /// Time between readings with --watch.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = auth::parse_duration)]
        interval: std::time::Duration,
        /// Stop after this many readings with --watch.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
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
    /// Creates the events topic (ORDERS_TOPIC, with ORDERS_TOPIC_PARTITIONS
    /// partitions and infinite retention) unless it exists. On a broker with
    /// ACLs only the admin principal may create topics: the servers' users
    /// only check that it is there.
    CreateTopic,
    /// The order fulfilment sagas, through order-fulfilment's admin service
    /// (ORDERS_FULFILMENT_ADDR; the token in ORDERS_TOKEN needs
    /// fulfilment:read, and fulfilment:admin to retry or cancel).
    Saga {
        /// order-fulfilment's admin address.
        #[arg(
            long,
            env = "ORDERS_FULFILMENT_ADDR",
            default_value = "127.0.0.1:50055"
        )]
        fulfilment_addr: String,
        #[command(subcommand)]
        command: saga::SagaCommand,
    },
    /// Messages the projector could not apply (live generation).
    DeadLetter {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Prints a signed bearer token (one line) for the servers, from the
    /// private key in ORDERS_AUTH_SIGNING_KEY_FILE.
    Token {
        /// A scope the token grants (`orders:read`, `orders:write`); repeat for more.
        #[arg(long = "scope", required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Confine the token to this customer's orders.
        #[arg(long = "customer", value_name = "ID")]
        customer: Option<String>,
        /// How long the token is valid: 90s, 15m, 24h, 7d.
        #[arg(long, default_value = "1h", value_parser = auth::parse_duration)]
        ttl: Duration,
        /// The token's subject (`sub`): who or what it is for.
        #[arg(long, default_value = "orderctl")]
        subject: String,
        /// The PKCS#8 PEM private key (Ed25519 or P-256) that signs.
        #[arg(long = "signing-key-file", env = "ORDERS_AUTH_SIGNING_KEY_FILE")]
        signing_key_file: std::path::PathBuf,
        /// The issuer (`iss`) the servers expect.
        #[arg(long = "issuer", env = "ORDERS_AUTH_ISSUER", default_value = DEFAULT_AUTH_ISSUER)]
        issuer: String,
        /// The audience (`aud`) the servers expect.
        #[arg(long = "audience", env = "ORDERS_AUTH_AUDIENCE", default_value = DEFAULT_AUTH_AUDIENCE)]
        audience: String,
    },
    /// Writes a development CA certificate (ca.pem; its key is not kept), a
    /// server certificate and key for the given hosts, and a client
    /// certificate and key for mutual TLS, into a directory.
    Certs {
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        dir: std::path::PathBuf,
        /// A host name or IP address the server certificate is valid for;
        /// repeat for more.
        #[arg(long = "host", value_name = "HOST", default_values = ["localhost", "127.0.0.1"])]
        hosts: Vec<String>,
        /// The client certificate's common name.
        #[arg(long, default_value = "orders-client")]
        client_name: String,
    },
    /// Writes a new Ed25519 signing key (signing-key.pem, owner-only) and the
    /// JWKS with its public key (jwks.json) into a directory.
    Keygen {
        /// Where to write the two files.
        #[arg(long, value_name = "DIR")]
        dir: std::path::PathBuf,
        /// Replace existing files (tokens signed by the old key stop working).
        #[arg(long)]
        force: bool,
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
        Command::Token {
            scopes,
            customer,
            ttl,
            subject,
            signing_key_file,
            issuer,
            audience,
        } => {
            let key = std::fs::read(&signing_key_file).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the signing key {}: {e}",
                    signing_key_file.display()
                )
            })?;
            let request = TokenRequest {
                subject,
                scopes,
                customer_id: customer,
                ttl,
                issuer,
                audience,
            };
            let minted = auth::mint(&key, &request, std::time::SystemTime::now())?;
            println!("{}", minted.token);
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs {
            dir,
            hosts,
            client_name,
        } => {
            let certs = tls::generate_dev_certificates(&dir, &hosts, &client_name)?;
            println!(
                "wrote {} (CA), {} + {} (server: {}), {} + {} (client {client_name})",
                certs.ca.display(),
                certs.server.0.display(),
                certs.server.1.display(),
                hosts.join(", "),
                certs.client.0.display(),
                certs.client.1.display(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { dir, force } => {
            let existing = ["signing-key.pem", "jwks.json"].map(|f| dir.join(f));
            if !force && existing.iter().any(|p| p.exists()) {
                anyhow::bail!(
                    "{} already holds a key; pass --force to replace it",
                    dir.display()
                );
            }
            let keys = auth::generate_keys(&dir)?;
            println!(
                "wrote {} and {} (kid {})",
                keys.signing_key.display(),
                keys.jwks.display(),
                keys.kid
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Saga {
            fulfilment_addr,
            command,
        } => saga::run(&fulfilment_addr, command).await,
        Command::CreateTopic => {
            let status = kafka::ensure_topic(&settings.kafka).await?;
            let what = match status {
                TopicStatus::Created => "created",
                TopicStatus::Existed => "exists",
            };
            println!("topic {}: {what}", settings.kafka.topic);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            json, watch: false, ..
        } => {
            let status = admin::status(settings).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            json,
            watch: true,
            interval,
            count,
        } => {
            watch_status(settings, json, interval, count).await?;
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

/// `status --watch`: a reading per `interval` until Ctrl-C or `count` readings.
async fn watch_status(
    settings: &AdminSettings,
    json: bool,
    interval: std::time::Duration,
    count: Option<u64>,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let mut watcher = admin::Watcher::connect(settings).await?;
    let redraw = !json && std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval(interval.max(std::time::Duration::from_millis(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut readings = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let (status, rates) = watcher.next().await?;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut out = std::io::stdout().lock();
        if json {
            let line = serde_json::json!({ "at": at, "status": status, "rates": rates });
            writeln!(out, "{line}")?;
        } else {
            if redraw {
                // Home and clear: the new reading replaces the old one.
                write!(out, "\x1b[H\x1b[2J")?;
            } else if readings > 0 {
                writeln!(out)?;
            }
            writeln!(out, "{at}  (every {:?}; Ctrl-C stops)", interval)?;
            write!(out, "{}", status.render())?;
            match rates {
                Some(rates) => write!(out, "{}", rates.render())?,
                None => writeln!(out, "rates: after the next reading")?,
            }
        }
        out.flush()?;
        readings += 1;
        if count.is_some_and(|n| readings >= n) {
            return Ok(());
        }
    }
}
