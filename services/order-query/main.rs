//! `order-query`: serves `orders.v1.OrderQueries` from the read model and runs
//! the projector that keeps it up to date.

use anyhow::Context;
use clap::Parser;
use orders::{config::QuerySettings, query::Application, server, telemetry};

/// The order query server.
#[derive(Debug, Parser)]
#[command(name = "order-query", version, about)]
struct Cli {
    #[command(flatten)]
    settings: QuerySettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { settings } = Cli::parse();
    let telemetry = telemetry::init(settings.server.log_format, "order-query");
    let app = Application::build(settings)
        .await
        .context("starting order-query")?;
    let ran = app
        .run_until_stopped(server::shutdown_signal())
        .await
        .context("running order-query");
    telemetry.shutdown();
    ran
}
