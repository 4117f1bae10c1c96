//! The gRPC server shape both servers share: health, reflection, bearer-token
//! authentication, TLS, per-RPC tracing spans (continuing the caller's
//! `traceparent` when spans are exported), the gRPC server metrics, a
//! deadline cap, the limits of
//! `limits` (load shedding, HTTP/2 limits, correlation metadata checks) and
//! graceful shutdown.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    service::Routes,
    transport::{ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    auth::{self, AuthLayer, AuthSetupError, ServicePolicy, Verifier},
    config::{AuthMode, ServerSettings},
    limits::{correlation, edge::EdgeLayer},
    metrics::{Metrics, grpc::GrpcMetricsLayer},
    telemetry,
    tls::{self, TlsSetupError},
};

/// Health of one gRPC service, reported under its name and under "" (the server).
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
}

impl Health {
    /// A reporter for `service`, starting as NOT_SERVING.
    pub async fn new(reporter: HealthReporter, service: &'static str) -> Self {
        let health = Self { reporter, service };
        health.set(false).await;
        health
    }

    /// Reports SERVING or NOT_SERVING.
    pub async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(self.service, status).await;
    }

    /// Re-evaluates `check` every second until `stop`, reporting its result.
    pub fn watch<F, Fut>(self, stop: CancellationToken, mut check: F) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let serving = check().await;
                if last != Some(serving) {
                    if serving {
                        tracing::info!(service = self.service, "dependencies reachable: SERVING");
                    } else {
                        tracing::warn!(
                            service = self.service,
                            "a dependency is unreachable: NOT_SERVING"
                        );
                    }
                    self.set(serving).await;
                    last = Some(serving);
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            self.set(false).await;
        })
    }
}

/// A descriptor of `google.rpc.BadRequest` and `google.rpc.PreconditionFailure`,
/// so that reflection clients (grpcurl) can decode the field violations and
/// (Inventory's short products) precondition violations in error details.
fn error_details_descriptor() -> prost_types::FileDescriptorSet {
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto,
        field_descriptor_proto::{Label, Type},
    };
    let field =
        |name: &str, json: &str, number: i32, label: Label, kind: Type, type_name: Option<&str>| {
            FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                label: Some(label as i32),
                r#type: Some(kind as i32),
                type_name: type_name.map(Into::into),
                json_name: Some(json.into()),
                ..Default::default()
            }
        };
    let violation = DescriptorProto {
        name: Some("FieldViolation".into()),
        field: vec![
            field("field", "field", 1, Label::Optional, Type::String, None),
            field(
                "description",
                "description",
                2,
                Label::Optional,
                Type::String,
                None,
            ),
        ],
        ..Default::default()
    };
    let bad_request = DescriptorProto {
        name: Some("BadRequest".into()),
        field: vec![field(
            "field_violations",
            "fieldViolations",
            1,
            Label::Repeated,
            Type::Message,
            Some(".google.rpc.BadRequest.FieldViolation"),
        )],
        nested_type: vec![violation],
        ..Default::default()
    };
    let precondition_violation = DescriptorProto {
        name: Some("Violation".into()),
        field: vec![
            field("type", "type", 1, Label::Optional, Type::String, None),
            field("subject", "subject", 2, Label::Optional, Type::String, None),
            field(
                "description",
                "description",
                3,
                Label::Optional,
                Type::String,
                None,
            ),
        ],
        ..Default::default()
    };
    let precondition_failure = DescriptorProto {
        name: Some("PreconditionFailure".into()),
        field: vec![field(
            "violations",
            "violations",
            1,
            Label::Repeated,
            Type::Message,
            Some(".google.rpc.PreconditionFailure.Violation"),
        )],
        nested_type: vec![precondition_violation],
        ..Default::default()
    };
    prost_types::FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("google/rpc/error_details.proto".into()),
            package: Some("google.rpc".into()),
            message_type: vec![bad_request, precondition_failure],
            syntax: Some("proto3".into()),
            ..Default::default()
        }],
    }
}

/// Health, and unless `reflection` is off the reflection (v1 and v1alpha)
/// services, for a server of `orders.v1`'s routes.
pub fn standard_routes(
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    reflection: bool,
) -> Routes {
    routes_reflecting(health, reflection, crate::proto::FILE_DESCRIPTOR_SET)
}

/// Health, and unless `reflection` is off the reflection services over
/// `descriptor_set` (an encoded `FileDescriptorSet` of `crate::proto`), for
/// a server's routes.
pub fn routes_reflecting(
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    reflection: bool,
    descriptor_set: &'static [u8],
) -> Routes {
    if !reflection {
        return Routes::new(health);
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_file_descriptor_set(error_details_descriptor())
        .build_v1()
        .expect("descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_file_descriptor_set(error_details_descriptor())
        .build_v1alpha()
        .expect("descriptor set is valid");
    Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
}

/// What stands between a server's routes and the network: the transport
/// (TLS, mutual TLS or loopback plaintext), the RPC metrics and the auth layer.
pub struct Edge {
    auth: AuthLayer,
    tls: Option<ServerTlsConfig>,
    metrics: GrpcMetricsLayer,
}

/// Why a server's edge cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The authentication settings are unusable.
    #[error("auth: {0}")]
    Auth(#[from] AuthSetupError),
    /// The TLS settings are unusable.
    #[error("tls: {0}")]
    Tls(#[from] TlsSetupError),
}

impl Edge {
    /// The edge `settings` ask for on `addr`, with the scope each of
    /// `services` needs and their RPC metrics registered in `metrics`; reads
    /// the JWKS and certificate files once, here.
    pub fn build(
        settings: &ServerSettings,
        addr: SocketAddr,
        services: &[ServicePolicy],
        metrics: &Metrics,
    ) -> Result<Self, EdgeError> {
        // Policies of single methods (`service/Method`) name no service.
        let names: Vec<&str> = services
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !name.contains('/'))
            .collect();
        Ok(Self {
            tls: tls::server_config(&settings.tls, addr)?,
            auth: auth_layer(settings, services)?,
            metrics: GrpcMetricsLayer::new(metrics, &names),
        })
    }
}

/// The auth layer `settings` ask for, with the scope each of `services` needs.
fn auth_layer(
    settings: &ServerSettings,
    services: &[ServicePolicy],
) -> Result<AuthLayer, AuthSetupError> {
    let auth = &settings.auth;
    if auth.mode == AuthMode::Disabled {
        tracing::warn!(
            "authentication is DISABLED (--auth=disabled): anyone who reaches this port may call every RPC"
        );
        return Ok(AuthLayer::disabled());
    }
    let path = auth.jwks_file.as_deref().ok_or(AuthSetupError::NoJwks)?;
    let verifier = Verifier::from_jwks_file(
        path,
        &auth.issuer,
        &auth.audience,
        Duration::from_secs(auth.clock_skew_s),
    )?;
    tracing::info!(jwks = %path.display(), issuer = %auth.issuer, audience = %auth.audience, "bearer tokens required");
    Ok(AuthLayer::new(verifier, services))
}

/// The scope `orders.v1.OrderCommands` needs.
pub const COMMANDS_POLICY: ServicePolicy = ("orders.v1.OrderCommands", auth::SCOPE_WRITE);
/// The scope `orders.v1.OrderQueries` needs.
pub const QUERIES_POLICY: ServicePolicy = ("orders.v1.OrderQueries", auth::SCOPE_READ);

/// The scopes `inventory.v1.Inventory` needs: `inventory:write`, reads
/// `inventory:read`.
pub const INVENTORY_POLICIES: [ServicePolicy; 3] = [
    ("inventory.v1.Inventory", auth::SCOPE_INVENTORY_WRITE),
    (
        "inventory.v1.Inventory/GetStock",
        auth::SCOPE_INVENTORY_READ,
    ),
    (
        "inventory.v1.Inventory/GetReservation",
        auth::SCOPE_INVENTORY_READ,
    ),
];
/// The scopes `payments.v1.Payments` needs: `payments:write`, reads `payments:read`.
pub const PAYMENTS_POLICIES: [ServicePolicy; 2] = [
    ("payments.v1.Payments", auth::SCOPE_PAYMENTS_WRITE),
    ("payments.v1.Payments/GetPayment", auth::SCOPE_PAYMENTS_READ),
];
/// The scopes `fulfilment.v1.FulfilmentAdmin` needs: `fulfilment:admin` to
/// retry or cancel, `fulfilment:read` to list and show.
pub const FULFILMENT_POLICIES: [ServicePolicy; 3] = [
    (
        "fulfilment.v1.FulfilmentAdmin",
        auth::SCOPE_FULFILMENT_ADMIN,
    ),
    (
        "fulfilment.v1.FulfilmentAdmin/ListSagas",
        auth::SCOPE_FULFILMENT_READ,
    ),
    (
        "fulfilment.v1.FulfilmentAdmin/GetSaga",
        auth::SCOPE_FULFILMENT_READ,
    ),
];

/// Serves `routes` on `listener` behind `edge` until `shutdown` resolves,
/// then drains in-flight RPCs.
pub async fn serve(
    listener: TcpListener,
    settings: &ServerSettings,
    edge: Edge,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let mut builder = settings.limits.http2(tonic::transport::Server::builder());
    if let Some(tls) = edge.tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .timeout(settings.request_timeout())
        .trace_fn(|request| {
            // Correlation headers are logged on every RPC of both servers, once checked.
            let header = |name| correlation::loggable(request.headers(), name);
            let path = request.uri().path();
            let span = tracing::info_span!(
                "rpc",
                otel.name = path.trim_start_matches('/'),
                otel.kind = "server",
                method = %path,
                order_id = tracing::field::Empty,
                subject = tracing::field::Empty,
                customer = tracing::field::Empty,
                request_id = %header(correlation::REQUEST_ID),
                traceparent = %header(correlation::TRACEPARENT),
            );
            let traceparent = header(correlation::TRACEPARENT);
            telemetry::continue_trace(&span, Some(traceparent).filter(|t| !t.is_empty()));
            span
        })
        // Every RPC is counted, refused ones included.
        .layer(edge.metrics)
        // Refused callers are answered before they take an in-flight slot.
        .layer(edge.auth)
        .layer(EdgeLayer::new(settings.concurrency_limit))
        .add_routes(routes)
        // TCP_NODELAY: without it a response written in several small segments
        // waits on the client's delayed ACK (about 40 ms with grpc-go clients).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Reads a string metadata value, if present and printable.
pub fn metadata_str<'a, T>(request: &'a tonic::Request<T>, key: &str) -> Option<&'a str> {
    request
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}
