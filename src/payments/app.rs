//! Start-up of `payments`: its database and migrations, the edge, health,
//! `/metrics`, the fault switch and the `Payments` gRPC service.

use std::future::Future;

use sqlx::{PgPool, migrate::Migrator};

use super::{fault::FaultSwitch, grpc::PaymentsService, store::PaymentStore};
use crate::{
    config::PaymentsSettings,
    database_server::{DatabaseServer, Spec, StartupError},
    limits::MAX_QUERY_REQUEST_BYTES,
    proto::{PAYMENTS_FILE_DESCRIPTOR_SET, payments::v1::payments_server::PaymentsServer},
    server,
};

/// The payments database's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/payments");

/// A built, not yet serving, `payments`.
pub struct Application {
    server: DatabaseServer,
    decline_above_minor: i64,
    fault: FaultSwitch,
}

impl Application {
    /// Connects, applies the migrations and binds the listeners.
    pub async fn build(settings: PaymentsSettings) -> Result<Self, StartupError> {
        let server = DatabaseServer::build(Spec {
            name: "payments",
            service: "payments.v1.Payments",
            policies: &server::PAYMENTS_POLICIES,
            descriptor_set: PAYMENTS_FILE_DESCRIPTOR_SET,
            migrator: &MIGRATOR,
            listen_addr: settings.listen_addr,
            database_url: &settings.database_url,
            server: &settings.server,
            metrics_addr: settings.metrics_addr,
        })
        .await?;
        tracing::info!(
            decline_above_minor = settings.decline_above_minor,
            "payments is a stand-in for a payment provider: it moves no money"
        );
        Ok(Self {
            server,
            decline_above_minor: settings.decline_above_minor,
            fault: FaultSwitch::new(settings.fault),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        self.server.metrics_port()
    }

    /// The payments database pool.
    pub fn pool(&self) -> &PgPool {
        self.server.pool()
    }

    /// The fault switch, settable while the server runs (tests of its callers).
    pub fn fault(&self) -> FaultSwitch {
        self.fault.clone()
    }

    /// Serves until `shutdown`, then drains in-flight RPCs.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let store = PaymentStore::new(self.server.pool().clone(), self.decline_above_minor);
        let service = PaymentsService::new(store, self.fault);
        self.server
            .run_until_stopped(
                |routes| {
                    routes.add_service(
                        PaymentsServer::new(service)
                            .max_decoding_message_size(MAX_QUERY_REQUEST_BYTES),
                    )
                },
                shutdown,
            )
            .await
    }
}
