//! `orderctl saga`: the fulfilment sagas through `fulfilment.v1.FulfilmentAdmin`
//! (list, show, retry, cancel), printed as text or JSON.

use std::{process::ExitCode, time::Duration};

use clap::Subcommand;
use orders::{
    auth::{self, BearerToken},
    proto::fulfilment::v1::{self as pb, fulfilment_admin_client::FulfilmentAdminClient},
};
use serde_json::{Value, json};
use tonic::transport::Channel;

#[derive(Debug, Subcommand)]
pub enum SagaCommand {
    /// Sagas, the latest change first.
    List {
        /// Only this phase: forward, compensating, completed, cancelled, failed.
        #[arg(long)]
        phase: Option<String>,
        /// Only sagas not finished with no change for this long (stuck): 90s, 15m.
        #[arg(long, value_name = "DURATION", value_parser = auth::parse_duration)]
        stuck_for: Option<Duration>,
        /// Only sagas whose next attempt is overdue by this long.
        #[arg(long, value_name = "DURATION", value_parser = auth::parse_duration)]
        overdue_by: Option<Duration>,
        /// Only sagas whose current step has had at least this many attempts.
        #[arg(long, value_name = "N")]
        min_attempts: Option<u32>,
        /// At most this many (default 50, at most 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One saga: step, remaining steps, deadlines, attempts, each call's last status.
    Show {
        /// The order's id.
        order_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Tries the saga's current step again now, with a fresh deadline.
    Retry {
        /// The order's id.
        order_id: String,
    },
    /// Compensates and cancels the order (before it is shipped).
    Cancel {
        /// The order's id.
        order_id: String,
    },
}

fn phase_named(name: &str) -> anyhow::Result<pb::SagaPhase> {
    pb::SagaPhase::from_str_name(&format!("SAGA_PHASE_{}", name.to_ascii_uppercase()))
        .filter(|p| *p != pb::SagaPhase::Unspecified)
        .ok_or_else(|| anyhow::anyhow!("unknown phase {name}"))
}

fn phase_name(phase: i32) -> String {
    pb::SagaPhase::try_from(phase)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("SAGA_PHASE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "?".into())
}

fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

fn duration(d: Option<Duration>) -> Option<prost_types::Duration> {
    d.map(|d| prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

/// The JSON form of a saga.
fn to_json(s: &pb::Saga) -> Value {
    json!({
        "order_id": s.order_id,
        "customer_id": s.customer_id,
        "phase": phase_name(s.phase),
        "current_step": s.current_step,
        "remaining_steps": s.remaining_steps,
        "attempts": s.attempts,
        "in_flight": s.in_flight,
        "next_attempt_at": time(s.next_attempt_at.as_ref()),
        "gives_up_at": time(s.gives_up_at.as_ref()),
        "amount_minor": s.amount_minor,
        "currency_code": s.currency_code,
        "tracking_number": s.tracking_number,
        "cancel_reason": s.cancel_reason,
        "calls": s.calls.iter().map(|c| json!({
            "step": c.step, "code": c.code, "attempt": c.attempt, "at": time(c.at.as_ref()),
        })).collect::<Vec<_>>(),
        "created_at": time(s.created_at.as_ref()),
        "updated_at": time(s.updated_at.as_ref()),
    })
}

/// One line per saga.
fn line(s: &pb::Saga) -> String {
    let last = s
        .calls
        .iter()
        .find(|c| c.step == s.current_step)
        .map_or("-".to_owned(), |c| c.code.clone());
    format!(
        "{}  {:<12}  {:<12}  attempts {:<3}  last {:<20}  {}",
        s.order_id,
        phase_name(s.phase),
        s.current_step,
        s.attempts,
        last,
        s.cancel_reason
    )
}

/// The whole saga, as text.
fn details(s: &pb::Saga) -> String {
    let v = to_json(s);
    let mut out = format!(
        "saga {}  (customer {}, {} {})\nphase       {}\nstep        {} (attempts {}, {})\nremaining   {}\nnext try    {}\ngives up    {}\n",
        s.order_id,
        s.customer_id,
        s.amount_minor,
        s.currency_code,
        phase_name(s.phase),
        s.current_step,
        s.attempts,
        if s.in_flight { "in flight" } else { "waiting" },
        if s.remaining_steps.is_empty() {
            "-".into()
        } else {
            s.remaining_steps.join(" → ")
        },
        v["next_attempt_at"].as_str().unwrap_or("-"),
        v["gives_up_at"].as_str().unwrap_or("-"),
    );
    if !s.tracking_number.is_empty() {
        out.push_str(&format!("tracking    {}\n", s.tracking_number));
    }
    if !s.cancel_reason.is_empty() {
        out.push_str(&format!("cancelled   {}\n", s.cancel_reason));
    }
    for c in &s.calls {
        out.push_str(&format!(
            "call        {:<13} {:<20} attempt {}  {}\n",
            c.step,
            c.code,
            c.attempt,
            time(c.at.as_ref()).as_str().unwrap_or("-")
        ));
    }
    out
}

/// Runs one `orderctl saga` command against the admin service at `addr`.
pub async fn run(addr: &str, command: SagaCommand) -> anyhow::Result<ExitCode> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach order-fulfilment at {addr}: {e}"))?;
    let mut admin = FulfilmentAdminClient::with_interceptor(channel, BearerToken::from_env());
    let status = |e: tonic::Status| anyhow::anyhow!("{:?}: {}", e.code(), e.message());
    match command {
        SagaCommand::List {
            phase,
            stuck_for,
            overdue_by,
            min_attempts,
            limit,
            json,
        } => {
            let sagas = admin
                .list_sagas(pb::ListSagasRequest {
                    phase: phase
                        .as_deref()
                        .map(phase_named)
                        .transpose()?
                        .unwrap_or_default() as i32,
                    stuck_for: duration(stuck_for),
                    overdue_by: duration(overdue_by),
                    min_attempts: min_attempts.unwrap_or(0),
                    limit,
                })
                .await
                .map_err(status)?
                .into_inner()
                .sagas;
            if json {
                let all: Vec<Value> = sagas.iter().map(to_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!("{} sagas", sagas.len());
                for s in &sagas {
                    println!("{}", line(s));
                }
            }
        }
        SagaCommand::Show { order_id, json } => {
            let saga = admin
                .get_saga(pb::GetSagaRequest { order_id })
                .await
                .map_err(status)?
                .into_inner()
                .saga
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&to_json(&saga))?);
            } else {
                print!("{}", details(&saga));
            }
        }
        SagaCommand::Retry { order_id } => {
            let saga = admin
                .retry_saga(pb::RetrySagaRequest { order_id })
                .await
                .map_err(status)?
                .into_inner()
                .saga
                .unwrap_or_default();
            println!("retrying: {}", line(&saga));
        }
        SagaCommand::Cancel { order_id } => {
            let saga = admin
                .cancel_saga(pb::CancelSagaRequest { order_id })
                .await
                .map_err(status)?
                .into_inner()
                .saga
                .unwrap_or_default();
            println!("cancelling: {}", line(&saga));
        }
    }
    Ok(ExitCode::SUCCESS)
}
