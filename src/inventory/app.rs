//! Start-up of `inventory`: its database and migrations, the edge, health,
//! `/metrics` and the `Inventory` gRPC service.

use std::future::Future;

use sqlx::{PgPool, migrate::Migrator};

use super::{grpc::InventoryService, store::InventoryStore};
use crate::{
    config::InventorySettings,
    database_server::{DatabaseServer, Spec, StartupError},
    limits::MAX_COMMAND_REQUEST_BYTES,
    proto::{INVENTORY_FILE_DESCRIPTOR_SET, inventory::v1::inventory_server::InventoryServer},
    server,
};

/// The inventory database's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/inventory");

/// A built, not yet serving, `inventory`.
pub struct Application {
    server: DatabaseServer,
}

impl Application {
    /// Connects, applies the migrations and binds the listeners.
    pub async fn build(settings: InventorySettings) -> Result<Self, StartupError> {
        let server = DatabaseServer::build(Spec {
            name: "inventory",
            service: "inventory.v1.Inventory",
            policies: &server::INVENTORY_POLICIES,
            descriptor_set: INVENTORY_FILE_DESCRIPTOR_SET,
            migrator: &MIGRATOR,
            listen_addr: settings.listen_addr,
            database_url: &settings.database_url,
            server: &settings.server,
            metrics_addr: settings.metrics_addr,
        })
        .await?;
        Ok(Self { server })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        self.server.metrics_port()
    }

    /// The inventory database pool.
    pub fn pool(&self) -> &PgPool {
        self.server.pool()
    }

    /// Serves until `shutdown`, then drains in-flight RPCs.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let service = InventoryService::new(InventoryStore::new(self.server.pool().clone()));
        self.server
            .run_until_stopped(
                |routes| {
                    routes.add_service(
                        InventoryServer::new(service)
                            .max_decoding_message_size(MAX_COMMAND_REQUEST_BYTES),
                    )
                },
                shutdown,
            )
            .await
    }
}
