//! Start-up of `order-fulfilment`: its database and migrations, the admin
//! server (edge, health, `/metrics`, reflection), the clients of the services
//! the saga calls, and the worker, run while this process holds the leader
//! lock (one worker at a time; a second process waits as a standby).

use std::{future::Future, sync::Arc, time::Duration};

use sqlx::{PgPool, Postgres, pool::PoolConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{
    MIGRATOR, admin::AdminService, calls::Services, settings::FulfilmentSettings, store::Store,
    worker::Worker,
};
use crate::{
    auth::BearerToken,
    database_server::{DatabaseServer, Spec, StartupError},
    proto::{
        FULFILMENT_FILE_DESCRIPTOR_SET,
        fulfilment::v1::fulfilment_admin_server::FulfilmentAdminServer,
        inventory::v1::inventory_client::InventoryClient,
        order_commands_client::OrderCommandsClient, order_queries_client::OrderQueriesClient,
        payments::v1::payments_client::PaymentsClient,
    },
    server,
};

/// The advisory lock the worker runs under (one worker per database).
const LEADER_LOCK: i64 = 0x6675_6c66_696c_6d74; // "fulfilmt"

/// Why `order-fulfilment` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FulfilmentError {
    /// The server over its database.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A setting is unusable.
    #[error("{0}")]
    Settings(String),
    /// The worker stopped with an error.
    #[error("the fulfilment worker failed: {0}")]
    Worker(String),
}

/// A built, not yet serving, `order-fulfilment`.
pub struct Application {
    server: DatabaseServer,
    worker: Worker,
    admin: AdminService,
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, FulfilmentError> {
    std::fs::read(path)
        .map_err(|e| FulfilmentError::Settings(format!("{what} {}: {e}", path.display())))
}

/// The TLS settings of the calls, if they use TLS.
fn client_tls(settings: &FulfilmentSettings) -> Result<Option<ClientTlsConfig>, FulfilmentError> {
    let Some(ca) = &settings.tls_ca_file else {
        return Ok(None);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "TLS CA")?));
    if let (Some(cert), Some(key)) = (
        &settings.tls_client_cert_file,
        &settings.tls_client_key_file,
    ) {
        tls = tls.identity(Identity::from_pem(
            read(cert, "TLS client certificate")?,
            read(key, "TLS client key")?,
        ));
    }
    Ok(Some(tls))
}

/// A lazily connected channel to `addr` (`host:port`), over TLS when `tls`
/// is set: the services may start after this one.
fn channel(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel, FulfilmentError> {
    let invalid = |e: &dyn std::fmt::Display| {
        FulfilmentError::Settings(format!("service address {addr}: {e}"))
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| invalid(&e))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        endpoint = endpoint
            .tls_config(tls.clone().domain_name(host))
            .map_err(|e| invalid(&e))?;
    }
    Ok(endpoint.connect_lazy())
}

impl Application {
    /// Connects, applies the migrations and binds the listeners.
    pub async fn build(settings: FulfilmentSettings) -> Result<Self, FulfilmentError> {
        let server = DatabaseServer::build(Spec {
            name: "order-fulfilment",
            service: "fulfilment.v1.FulfilmentAdmin",
            policies: &server::FULFILMENT_POLICIES,
            descriptor_set: FULFILMENT_FILE_DESCRIPTOR_SET,
            migrator: &MIGRATOR,
            listen_addr: settings.listen_addr,
            database_url: &settings.database_url,
            server: &settings.server,
            metrics_addr: settings.metrics_addr,
        })
        .await?;
        let token = match &settings.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    FulfilmentError::Settings(format!("token file {}: {e}", path.display()))
                })?;
                BearerToken::new(text.trim()).map_err(|_| {
                    FulfilmentError::Settings(format!("token file {}: not a token", path.display()))
                })?
            }
            None => BearerToken::none(),
        };
        let tls = client_tls(&settings)?;
        let tls = tls.as_ref();
        let timings = settings.timings();
        let store = Store::new(server.pool().clone(), timings);
        let work = Arc::new(Notify::new());
        let worker = Worker {
            store: store.clone(),
            services: Services {
                inventory: InventoryClient::with_interceptor(
                    channel(&settings.inventory_addr, tls)?,
                    token.clone(),
                ),
                payments: PaymentsClient::with_interceptor(
                    channel(&settings.payments_addr, tls)?,
                    token.clone(),
                ),
                commands: OrderCommandsClient::with_interceptor(
                    channel(&settings.command_addr, tls)?,
                    token.clone(),
                ),
                timeout: Duration::from_millis(settings.call_timeout_ms),
            },
            queries: OrderQueriesClient::with_interceptor(
                channel(&settings.query_addr, tls)?,
                token,
            ),
            kafka: settings.kafka.clone(),
            start_at: settings.start_at,
            max_calls: settings.max_calls.max(1),
            crash: settings.crash_at,
            work: work.clone(),
        };
        Ok(Self {
            admin: AdminService::new(store, timings, work),
            server,
            worker,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The saga database pool.
    pub fn pool(&self) -> &PgPool {
        self.server.pool()
    }

    /// Serves the admin service and runs the worker (once leader) until
    /// `shutdown`, or until the worker fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), FulfilmentError> {
        let stop = CancellationToken::new();
        let leading = tokio::spawn(lead(self.server.pool().clone(), self.worker, stop.clone()));
        let admin = self.admin;
        let stopped = stop.clone();
        let served = self
            .server
            .run_until_stopped(
                |routes| routes.add_service(FulfilmentAdminServer::new(admin)),
                async move {
                    tokio::select! {
                        () = shutdown => {}
                        () = stopped.cancelled() => {}
                    }
                },
            )
            .await;
        stop.cancel();
        let led = leading.await.unwrap_or_else(|e| Err(e.to_string()));
        served?;
        led.map_err(FulfilmentError::Worker)
    }
}

/// Waits for the leader lock, then runs `worker` until `stop`; a failed
/// worker stops the process (`stop` is cancelled).
async fn lead(pool: PgPool, worker: Worker, stop: CancellationToken) -> Result<(), String> {
    let mut waiting_logged = false;
    let mut lock: PoolConnection<Postgres> = loop {
        let attempt = async {
            let mut connection = pool.acquire().await?;
            let locked = sqlx::query_scalar!(
                r#"SELECT pg_try_advisory_lock($1) AS "locked!""#,
                LEADER_LOCK
            )
            .fetch_one(&mut *connection)
            .await?;
            Ok::<_, sqlx::Error>(locked.then_some(connection))
        };
        match attempt.await {
            Ok(Some(connection)) => break connection,
            Ok(None) if !waiting_logged => {
                tracing::info!("another order-fulfilment runs the sagas; standing by");
                waiting_logged = true;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot take the fulfilment leader lock"),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    tracing::info!("order-fulfilment leads: running the sagas");
    let running = worker.run(stop.clone());
    tokio::pin!(running);
    let ran = tokio::select! {
        ran = &mut running => ran.map_err(|error| {
            tracing::error!(%error, "the fulfilment worker failed");
            error.to_string()
        }),
        () = lock_lost(&mut lock, &stop) => {
            // A standby may take the lock now: this worker must not go on.
            tracing::error!("the leader lock's connection failed: stopping the worker");
            stop.cancel();
            let _ = running.await;
            Err("the fulfilment leader lock was lost".to_owned())
        }
    };
    stop.cancel();
    ran
}

/// How often the leader lock's connection is checked.
const LOCK_CHECK: Duration = Duration::from_secs(5);

/// Resolves when the connection holding the leader lock stops answering (the
/// lock may then be another process's); pends until `stop` otherwise.
async fn lock_lost(lock: &mut PoolConnection<Postgres>, stop: &CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return std::future::pending().await,
            () = tokio::time::sleep(LOCK_CHECK) => {}
        }
        let ping = sqlx::query!("SELECT 1 AS ping").fetch_one(&mut **lock);
        match tokio::time::timeout(LOCK_CHECK, ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "the leader lock's connection failed");
                return;
            }
            Err(_) => {
                tracing::warn!("the leader lock's connection did not answer in time");
                return;
            }
        }
    }
}
