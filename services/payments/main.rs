//! `payments`: serves `payments.v1.Payments`, a stand-in for an external payment provider.

use clap::Parser;
use orders::{config::PaymentsSettings, payments::app::Application, server, telemetry};

/// A stand-in payment provider: authorizes, captures and voids, moving no money.
#[derive(Debug, Parser)]
#[command(name = "payments", version)]
struct Cli {
    #[command(flatten)]
    settings: PaymentsSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.settings.server.log_format, "payments");
    let app = Application::build(cli.settings).await?;
    let ran = app.run_until_stopped(server::shutdown_signal()).await;
    telemetry.shutdown();
    Ok(ran?)
}
