//! `inventory`: serves `inventory.v1.Inventory` (stock and reservations for order fulfilment).

use clap::Parser;
use orders::{config::InventorySettings, inventory::app::Application, server, telemetry};

/// Keeps stock per product and reservations against it.
#[derive(Debug, Parser)]
#[command(name = "inventory", version)]
struct Cli {
    #[command(flatten)]
    settings: InventorySettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.settings.server.log_format, "inventory");
    let app = Application::build(cli.settings).await?;
    let ran = app.run_until_stopped(server::shutdown_signal()).await;
    telemetry.shutdown();
    Ok(ran?)
}
