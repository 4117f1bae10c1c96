//! `order-command`: serves `orders.v1.OrderCommands` and relays the outbox to Kafka.

use clap::Parser;
use orders::{command::app::Application, config::CommandSettings, server, telemetry};

/// Decides order commands, appends their events to PostgreSQL and publishes them to Kafka.
#[derive(Debug, Parser)]
#[command(name = "order-command", version)]
struct Cli {
    #[command(flatten)]
    settings: CommandSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.settings.server.log_format, "order-command");
    let app = Application::build(cli.settings).await?;
    let ran = app.run_until_stopped(server::shutdown_signal()).await;
    telemetry.shutdown();
    Ok(ran?)
}
