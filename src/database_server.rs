//! The start-up shape of a gRPC server over one PostgreSQL database of its
//! own (Inventory, Payments): the pool (with the session timeouts), its
//! role checked, its migrations applied, the listener, the edge (TLS, auth,
//! RPC metrics), health from a database ping, `/metrics`, reflection over
//! its own descriptor set, and graceful shutdown.

use std::{future::Future, net::SocketAddr, time::Duration};

use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    auth::ServicePolicy,
    config::ServerSettings,
    metrics::{self, Metrics, MetricsAddr},
    roles::{self, RoleError},
    secret::DatabaseUrl,
    server,
};

/// What a server over its own database is.
pub struct Spec<'a> {
    /// The process's name (logs, `orders_build_info`).
    pub name: &'static str,
    /// The gRPC service it serves, by its full name (health reports it).
    pub service: &'static str,
    /// The scopes its RPCs need.
    pub policies: &'a [ServicePolicy],
    /// Its descriptor set, for reflection.
    pub descriptor_set: &'static [u8],
    /// Its database's migrations.
    pub migrator: &'static Migrator,
    /// Where the gRPC server listens.
    pub listen_addr: SocketAddr,
    /// Its database.
    pub database_url: &'a DatabaseUrl,
    /// The shared server settings.
    pub server: &'a ServerSettings,
    /// Where `/metrics` is served.
    pub metrics_addr: MetricsAddr,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database role is refused (a superuser).
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The migrations could not be applied.
    #[error("migrations: {0}")]
    Migrations(#[from] sqlx::migrate::MigrateError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The authentication or TLS settings are unusable.
    #[error(transparent)]
    Edge(#[from] server::EdgeError),
    /// The gRPC server failed.
    #[error("grpc: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A built, not yet serving, server over its own database.
pub struct DatabaseServer {
    name: &'static str,
    service: &'static str,
    descriptor_set: &'static [u8],
    server: ServerSettings,
    listener: TcpListener,
    pool: PgPool,
    edge: server::Edge,
    metrics: Metrics,
    metrics_listener: Option<TcpListener>,
}

impl DatabaseServer {
    /// Connects, checks the role, applies the migrations and binds the listeners.
    pub async fn build(spec: Spec<'_>) -> Result<Self, StartupError> {
        let metrics = Metrics::for_service(spec.name);
        let edge = server::Edge::build(spec.server, spec.listen_addr, spec.policies, &metrics)?;
        let limits = &spec.server.limits;
        tracing::info!(database = %spec.database_url, "connecting to the {} database", spec.name);
        let options = limits.session_options(spec.database_url.connect_options()?);
        let pool = PgPoolOptions::new()
            .max_connections(spec.server.db_max_connections)
            .acquire_timeout(limits.db_acquire_timeout())
            .connect_with(options)
            .await?;
        roles::refuse_superuser(&pool, spec.server.allow_superuser).await?;
        // The server's role owns its database; migrations may take longer
        // than its statement timeout.
        let mut conn = pool.acquire().await?.detach();
        crate::limits::lift_session_timeouts(&mut conn).await?;
        let migrated = spec.migrator.run(&mut conn).await;
        let _ = sqlx::Connection::close(conn).await;
        migrated?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { addr, source })
        };
        let listener = bind(spec.listen_addr).await?;
        let metrics_listener = match spec.metrics_addr.0 {
            Some(addr) => Some(
                metrics::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            name: spec.name,
            service: spec.service,
            descriptor_set: spec.descriptor_set,
            server: spec.server.clone(),
            listener,
            pool,
            edge,
            metrics,
            metrics_listener,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        let listener = self.metrics_listener.as_ref()?;
        listener.local_addr().ok().map(|a| a.port())
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves health, reflection and what `add` adds to the routes until
    /// `shutdown`, then drains in-flight RPCs.
    pub async fn run_until_stopped(
        self,
        add: impl FnOnce(Routes) -> Routes,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let stop = CancellationToken::new();
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = server::Health::new(reporter, self.service).await;
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
        let metrics_task = self.metrics_listener.map(|listener| {
            tokio::spawn(metrics::serve(listener, self.metrics.clone(), stop.clone()))
        });
        let routes = add(server::routes_reflecting(
            health_service,
            self.server.reflection,
            self.descriptor_set,
        ));
        tracing::info!(addr = ?self.listener.local_addr().ok(), "{} serving", self.name);
        let served = server::serve(self.listener, &self.server, self.edge, routes, shutdown).await;
        stop.cancel();
        let _ = health_task.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        self.pool.close().await;
        tracing::info!("{} stopped", self.name);
        Ok(served?)
    }
}
