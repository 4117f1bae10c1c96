//! Logging and tracing set-up shared by the binaries: `tracing` to stderr
//! (text or JSON) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, OpenTelemetry spans exported
//! over OTLP/gRPC with the standard `OTEL_*` variables (service name,
//! resource attributes, sampler, headers, timeout).
//!
//! What is exported: a span per RPC that continues the caller's W3C
//! `traceparent`; the writer's batch (a child of the first command's RPC,
//! linked to the others); the relay's publish and the projector's batch, each
//! continuing the trace stored with its first event (or carried in its Kafka
//! headers) and linked to the others. The event store keeps, and Kafka
//! carries, the `traceparent` of the RPC span that wrote each event, so one
//! trace runs from the client to the moment the change is readable.
//!
//! One filter, `RUST_LOG` (default INFO, the noisy clients at WARN), decides
//! both what is logged and which spans exist to be exported. It is global on
//! purpose: a per-layer filter beside the OpenTelemetry layer makes
//! tracing-subscriber lose events and spans of the other layer now and then
//! (tokio-rs/tracing-opentelemetry#257).

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, prelude::*};

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether spans are exported (set once, by `init`).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Most links one batch span carries (the first events' traces).
pub const MAX_LINKS: usize = 32;

/// Keeps the span exporter alive; `shutdown` flushes it.
#[must_use = "dropping the guard does not flush the spans; call shutdown"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing the trace exporter failed");
        }
    }
}

/// Whether the OTLP variables ask for trace export.
fn otlp_configured() -> bool {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber for the binary `service`; `RUST_LOG`
/// overrides the default `info` filter of the logs and the spans. Text is coloured only on
/// a terminal (and never with `NO_COLOR`), so log files hold plain lines.
/// Must run inside the Tokio runtime (the exporter's gRPC client lives there).
pub fn init(format: LogFormat, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,sqlx=warn,h2=warn,tower=warn"));
    let logs = match format {
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let (provider, problem) = if otlp_configured() {
        match tracer_provider(service) {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        }
    } else {
        (None, None)
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_threads(false)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if let Some(error) = problem {
        tracing::error!(%error, "cannot set up the OTLP trace exporter; spans are not exported");
    }
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting spans over OTLP/gRPC");
    }
    Telemetry { provider }
}

/// The OTLP/gRPC exporter and the provider batching into it.
fn tracer_provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        && protocol.trim() != "grpc"
    {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported; only grpc is"
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// One `traceparent` value as a propagation carrier.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The remote span a W3C `traceparent` names, if it is valid.
pub fn remote_context(traceparent: &str) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(&Traceparent(traceparent));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` (not yet entered) continue the trace of `traceparent`.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if exporting()
        && let Some(cx) = traceparent.and_then(remote_context)
    {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` (not yet entered) to the remote span of `traceparent`.
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if exporting()
        && let Some(cx) = traceparent.and_then(remote_context)
    {
        span.add_link(cx.span().span_context().clone());
    }
}

/// Makes `span` (not yet entered), the span of a batch of events, continue
/// the trace of the first of `traceparents` and link the next distinct ones
/// (at most `MAX_LINKS`).
pub fn follow<'a>(span: &tracing::Span, traceparents: impl Iterator<Item = &'a str>) {
    if !exporting() {
        return;
    }
    let mut traces: Vec<&str> = Vec::new();
    for traceparent in traceparents {
        if traces.len() > MAX_LINKS {
            break;
        }
        if !traces.contains(&traceparent) {
            traces.push(traceparent);
        }
    }
    continue_trace(span, traces.first().copied());
    for traceparent in traces.iter().skip(1) {
        link(span, Some(traceparent));
    }
}

/// Links `span` (not yet entered) to `other` (a started span).
pub fn link_span(span: &tracing::Span, other: &tracing::Span) {
    if exporting() {
        let cx = other.context();
        let context = cx.span().span_context().clone();
        span.add_link(context);
    }
}

/// The W3C `traceparent` of `span` when spans are exported and it is being
/// recorded: what the event store keeps for the events it writes.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let cx = span.context();
    format_traceparent(cx.span().span_context())
}

/// `00-<trace id>-<span id>-<flags>`, for a valid span context.
pub fn format_traceparent(context: &SpanContext) -> Option<String> {
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = remote_context(traceparent).expect("valid");
        assert_eq!(
            format_traceparent(cx.span().span_context()).as_deref(),
            Some(traceparent)
        );
        assert!(
            remote_context("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(remote_context("garbage").is_none());
    }
}
