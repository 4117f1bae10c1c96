//! One trace across both server binaries. The real `order-command` and
//! `order-query` export their spans over OTLP/gRPC to a collector in this
//! test, which keeps them in memory. A PlaceOrder sent with a W3C
//! `traceparent` must give, in the caller's trace: order-command's RPC span
//! (a child of the caller's span), the writer's batch and the relay's publish
//! (children of that RPC span), and order-query's projector batch (a child of
//! the same RPC span, found through the event's Kafka headers).

use std::{
    process::Child,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::Span,
};
use orders::proto;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use crate::{
    admin::{CONVERGED, System, free_port},
    command::{self, place},
    query, support,
};

/// A span as exported, with the `service.name` of its process.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    span: Span,
}

/// An OTLP trace collector that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut kept = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                kept.extend(scope.spans.into_iter().map(|span| Exported {
                    service: service.clone(),
                    span,
                }));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// The spans of trace `trace_id` named `name` from `service`.
    fn find(&self, trace_id: &[u8], service: &str, name: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.service == service && e.span.trace_id == trace_id && e.span.name == name)
            .map(|e| e.span.clone())
            .collect()
    }
}

impl Collector {
    /// What arrived: service, span name, trace id, span id, parent span id.
    fn summary(&self) -> Vec<String> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {} trace={} span={} parent={}",
                    e.service,
                    e.span.name,
                    hex(&e.span.trace_id),
                    hex(&e.span.span_id),
                    hex(&e.span.parent_span_id)
                )
            })
            .collect()
    }
}

/// Children killed on drop, so that a failing assertion leaves no server running.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_order_is_one_trace_from_the_caller_through_both_servers_to_the_projection() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let system = System::new("obs_trace").await;
    support::create_topic(&system.kafka).await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    let (command_port, query_port) = (free_port(), free_port());
    let log = |name: &str| std::env::temp_dir().join(format!("{}.log", support::unique(name)));
    let _servers = Servers(vec![
        system.spawn_with(
            env!("CARGO_BIN_EXE_order-command"),
            command_port,
            &log("trace_command"),
            &otel,
        ),
        system.spawn_with(
            env!("CARGO_BIN_EXE_order-query"),
            query_port,
            &log("trace_query"),
            &otel,
        ),
    ]);

    let trace_id = uuid::Uuid::new_v4().as_bytes().to_vec();
    let caller_span = uuid::Uuid::new_v4().as_bytes()[..8].to_vec();
    let traceparent = format!("00-{}-{}-01", hex(&trace_id), hex(&caller_span));
    let mut request = Request::new(place("traced"));
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let placed = command::connect(command_port)
        .await
        .place_order(request)
        .await
        .expect("PlaceOrder")
        .into_inner();
    let reader = query::connect(query_port).await;
    support::wait_until(CONVERGED, "the order readable", || {
        let (mut reader, order_id) = (reader.clone(), placed.order_id.clone());
        async move {
            reader
                .get_order(proto::GetOrderRequest {
                    order_id,
                    min_version: Some(placed.version),
                    ..Default::default()
                })
                .await
                .is_ok()
        }
    })
    .await;

    let rpc_name = "orders.v1.OrderCommands/PlaceOrder";
    let expected = [
        ("order-command", rpc_name),
        ("order-command", "writer.batch"),
        ("order-command", "relay.publish"),
        ("order-query", "projector.batch"),
    ];
    let all_there = || {
        expected
            .iter()
            .all(|(service, name)| !collector.find(&trace_id, service, name).is_empty())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !all_there() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (service, name) in expected {
        assert!(
            !collector.find(&trace_id, service, name).is_empty(),
            "no {service} span {name} in trace {} within 30 s; received: {:?}",
            hex(&trace_id),
            collector.summary()
        );
    }
    let rpc = collector.find(&trace_id, "order-command", rpc_name);
    assert_eq!(rpc.len(), 1, "one RPC span: {rpc:?}");
    let rpc = &rpc[0];
    assert_eq!(
        rpc.parent_span_id, caller_span,
        "the RPC continues the caller's span"
    );
    for (service, name) in [
        ("order-command", "writer.batch"),
        ("order-command", "relay.publish"),
        ("order-query", "projector.batch"),
    ] {
        let spans = collector.find(&trace_id, service, name);
        assert!(
            spans.iter().any(|s| s.parent_span_id == rpc.span_id),
            "{service} {name} is a child of the RPC span {}: {spans:?}",
            hex(&rpc.span_id)
        );
    }
    serving.abort();
}
