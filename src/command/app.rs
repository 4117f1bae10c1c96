//! Start-up of `order-command`: pool, its role and the migrations, listener,
//! writer, relay, health, the metrics endpoint and the gRPC server. The
//! writer and relay tasks are supervised: one that dies stops the server
//! with an error.

use std::{future::Future, time::Duration};

use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    grpc::CommandService,
    metrics::{OutboxMetrics, RelayMetrics, WriterMetrics},
    migrations::{self, MigrationError},
    relay::{self, Relay},
    writer::Writer,
};
use crate::{
    config::CommandSettings,
    limits::MAX_COMMAND_REQUEST_BYTES,
    metrics::{self, Metrics},
    proto::order_commands_server::OrderCommandsServer,
    roles::{self, RoleError},
    server,
    supervisor::{Supervisor, TaskFailed},
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database role is refused (a superuser).
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The write migrations are not applied and could not be.
    #[error(transparent)]
    Migrations(#[from] MigrationError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Kafka client could not be created.
    #[error("relay: {0}")]
    Relay(#[from] relay::RelayError),
    /// The authentication or TLS settings are unusable.
    #[error(transparent)]
    Edge(#[from] server::EdgeError),
    /// The gRPC server failed.
    #[error("grpc: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A background task (writer, relay) failed; the server stopped.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// A built, not yet serving, `order-command`.
pub struct Application {
    settings: CommandSettings,
    listener: TcpListener,
    pool: PgPool,
    relay: Option<Relay>,
    edge: server::Edge,
    metrics: Metrics,
    metrics_listener: Option<TcpListener>,
}

impl Application {
    /// Connects, checks its role and the write migrations (applying them when
    /// its role may), binds the listener and prepares the relay.
    pub async fn build(settings: CommandSettings) -> Result<Self, StartupError> {
        let metrics = Metrics::for_service("order-command");
        let edge = server::Edge::build(
            &settings.server,
            settings.listen_addr,
            &[server::COMMANDS_POLICY],
            &metrics,
        )?;
        let limits = &settings.server.limits;
        tracing::info!(database = %settings.database_url, "connecting to the write database");
        // Every connection of the server, the relay's included, has the
        // statement and lock timeouts.
        let options = limits.session_options(settings.database_url.connect_options()?);
        let pool = PgPoolOptions::new()
            .max_connections(settings.server.db_max_connections)
            .acquire_timeout(limits.db_acquire_timeout())
            .connect_with(options.clone())
            .await?;
        roles::refuse_superuser(&pool, settings.server.allow_superuser).await?;
        migrations::ensure_applied(&pool).await?;
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: settings.listen_addr,
                source,
            })?;
        let relay = if settings.relay {
            Some(
                Relay::connecting_with(
                    options,
                    settings.kafka.clone(),
                    settings.max_batch.max(64) * 4,
                )?
                .with_metrics(RelayMetrics::registered(&metrics)),
            )
        } else {
            None
        };
        let metrics_listener = match settings.metrics_addr.0 {
            Some(addr) => Some(
                metrics::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            settings,
            listener,
            pool,
            relay,
            edge,
            metrics,
            metrics_listener,
        })
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        let listener = self.metrics_listener.as_ref()?;
        listener.local_addr().ok().map(|a| a.port())
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The write database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown`, then drains RPCs, finishes the writer's batches and stops the relay.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let stop = CancellationToken::new();
        // The writers may end once the server is drained, the relay once `stop` is cancelled.
        let drained = CancellationToken::new();
        let mut writers = Supervisor::new(drained.clone(), self.settings.fault_panic_task.clone());
        let mut relaying = Supervisor::new(stop.clone(), self.settings.fault_panic_task.clone());
        let (writer, writer_tasks) = Writer::start(
            self.pool.clone(),
            self.settings.writers,
            self.settings.max_batch,
            self.settings.fault_abort_mid_batch,
            WriterMetrics::registered(&self.metrics),
        );

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = server::Health::new(reporter, "orders.v1.OrderCommands").await;
        let pool = self.pool.clone();
        let health_task = health.watch(stop.clone(), move || {
            let pool = pool.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    sqlx::query!("SELECT 1 AS ping").fetch_one(&pool),
                )
                .await
                .is_ok_and(|r| r.is_ok())
            }
        });

        for task in writer_tasks {
            writers.spawn("writer", task);
        }
        relaying.spawn(
            "outbox-metrics",
            OutboxMetrics::registered(&self.metrics).sample(self.pool.clone(), stop.clone()),
        );
        if let Some(listener) = self.metrics_listener {
            relaying.spawn(
                "metrics",
                metrics::serve(listener, self.metrics.clone(), stop.clone()),
            );
        }
        if let Some(relay) = self.relay {
            let listener = match relay::outbox_listener(&self.pool).await {
                Ok(l) => Some(l),
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for outbox commits; polling only");
                    None
                }
            };
            relaying.spawn(
                "relay",
                relay.run(listener, Duration::from_millis(500), stop.clone()),
            );
        }
        let (writer_failed, relay_failed) = (writers.failed(), relaying.failed());
        let writers = tokio::spawn(writers.watch());
        let relaying = tokio::spawn(relaying.watch());
        let shutdown = {
            let drained = drained.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = writer_failed.cancelled() => {}
                    () = relay_failed.cancelled() => {}
                }
                // From here the server drains and then drops the last writer
                // handle: the writers end once their queues are empty.
                drained.cancel();
            }
        };

        let routes = server::standard_routes(health_service, self.settings.server.reflection)
            .add_service(
                OrderCommandsServer::new(CommandService::new(writer))
                    .max_decoding_message_size(MAX_COMMAND_REQUEST_BYTES),
            );
        tracing::info!(addr = %self.listener.local_addr().map_err(|source| StartupError::Bind { addr: self.settings.listen_addr, source })?, "order-command serving");
        let served = server::serve(
            self.listener,
            &self.settings.server,
            self.edge,
            routes,
            shutdown,
        )
        .await;

        // The server is drained and owned the last writer handle: the writers finish their batches.
        let writers = writers.await.expect("the writers' supervisor never panics");
        stop.cancel();
        let relaying = relaying.await.expect("the relay's supervisor never panics");
        let _ = health_task.await;
        self.pool.close().await;
        tracing::info!("order-command stopped");
        served?;
        writers?;
        Ok(relaying?)
    }
}
