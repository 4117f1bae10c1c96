//! `order-fulfilment`: the saga that takes confirmed orders through
//! Inventory, Payments and OrderCommands, and its admin service.

use clap::Parser;
use orders::{
    fulfilment::{app::Application, settings::FulfilmentSettings},
    server, telemetry,
};

/// Fulfils confirmed orders: reserves stock, authorizes payment, dispatches,
/// ships and captures, compensating when a step fails.
#[derive(Debug, Parser)]
#[command(name = "order-fulfilment", version)]
struct Cli {
    #[command(flatten)]
    settings: FulfilmentSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.settings.server.log_format, "order-fulfilment");
    let app = Application::build(cli.settings).await?;
    let ran = app.run_until_stopped(server::shutdown_signal()).await;
    telemetry.shutdown();
    Ok(ran?)
}
