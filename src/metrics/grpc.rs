//! gRPC server metrics under the names of the common Go server conventions
//! (go-grpc-prometheus), so existing dashboards work unchanged:
//! `grpc_server_started_total`, `grpc_server_handled_total` and
//! `grpc_server_handling_seconds`, labelled `grpc_service`, `grpc_method`,
//! `grpc_type` and (handled) `grpc_code`, spelled like Go's `codes.Code`.
//!
//! The methods come from the services' descriptors, so every method is
//! present from the start (started and `OK` at zero) and a request for an
//! unknown path is counted under `unknown` rather than growing the label
//! set. The code of an answer is read from its headers (a trailers-only
//! answer) or from its trailers as the body ends; a body dropped before its
//! trailers (the client went away) counts as `Canceled`.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prost::Message as _;
use tonic::{Code, codegen::http};
use tower::{Layer, Service};

use super::{Counter, Family, Histogram, Metrics, SECONDS_BUCKETS, histogram};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_type: &'static str,
    grpc_code: &'static str,
}

/// The metrics of one method, looked up once.
#[derive(Debug)]
struct MethodMetrics {
    labels: MethodLabels,
    started: Counter,
    ok: Counter,
    seconds: Histogram,
}

/// The gRPC server metrics of one server; the layer that records them.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    handled: Family<HandledLabels, Counter>,
    /// By path (`/package.Service/Method`).
    methods: HashMap<String, Arc<MethodMetrics>>,
    unknown: Arc<MethodMetrics>,
}

/// The Go spelling of a status code (`codes.Code.String()`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The services every server serves besides its own: health and reflection.
fn standard_methods() -> Vec<(String, String, &'static str)> {
    let mut methods = Vec::new();
    methods.extend(described(
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        &["grpc.health.v1.Health"],
    ));
    for service in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        methods.push((
            service.to_owned(),
            "ServerReflectionInfo".to_owned(),
            "bidi_stream",
        ));
    }
    methods
}

/// `(service, method, type)` of each method of `services` in an encoded descriptor set.
fn described(descriptor_set: &[u8], services: &[&str]) -> Vec<(String, String, &'static str)> {
    let set = prost_types::FileDescriptorSet::decode(descriptor_set)
        .expect("a compiled-in descriptor set decodes");
    let mut methods = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            let name = if package.is_empty() {
                service.name().to_owned()
            } else {
                format!("{package}.{}", service.name())
            };
            if !services.contains(&name.as_str()) {
                continue;
            }
            for method in &service.method {
                let kind = match (method.client_streaming(), method.server_streaming()) {
                    (false, false) => "unary",
                    (true, false) => "client_stream",
                    (false, true) => "server_stream",
                    (true, true) => "bidi_stream",
                };
                methods.push((name.clone(), method.name().to_owned(), kind));
            }
        }
    }
    methods
}

impl GrpcMetricsLayer {
    /// The metrics of a server serving `services` (from this crate's
    /// descriptor set) besides health and reflection, registered in `metrics`.
    pub fn new(metrics: &Metrics, services: &[&str]) -> Self {
        let started = Family::<MethodLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let seconds =
            Family::<MethodLabels, Histogram>::new_with_constructor(|| histogram(SECONDS_BUCKETS));
        metrics.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            started.clone(),
        );
        metrics.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            handled.clone(),
        );
        metrics.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            seconds.clone(),
        );
        let entry = |service: String, method: String, kind: &'static str| {
            let labels = MethodLabels {
                grpc_service: service,
                grpc_method: method,
                grpc_type: kind,
            };
            let ok = handled.get_or_create_owned(&handled_labels(&labels, Code::Ok));
            Arc::new(MethodMetrics {
                started: started.get_or_create_owned(&labels),
                seconds: seconds.get_or_create_owned(&labels),
                ok,
                labels,
            })
        };
        let mut listed: Vec<_> = crate::proto::DESCRIPTOR_SETS
            .iter()
            .flat_map(|set| described(set, services))
            .collect();
        listed.extend(standard_methods());
        let methods = listed
            .into_iter()
            .map(|(service, method, kind)| {
                (format!("/{service}/{method}"), entry(service, method, kind))
            })
            .collect();
        let unknown = entry("unknown".to_owned(), "unknown".to_owned(), "unary");
        Self {
            inner: Arc::new(Inner {
                handled,
                methods,
                unknown,
            }),
        }
    }
}

fn handled_labels(labels: &MethodLabels, code: Code) -> HandledLabels {
    HandledLabels {
        grpc_service: labels.grpc_service.clone(),
        grpc_method: labels.grpc_method.clone(),
        grpc_type: labels.grpc_type,
        grpc_code: code_name(code),
    }
}

impl Inner {
    fn finish(&self, method: &MethodMetrics, code: Code, started: Instant) {
        method.seconds.observe(started.elapsed().as_secs_f64());
        if code == Code::Ok {
            method.ok.inc();
        } else {
            self.handled
                .get_or_create(&handled_labels(&method.labels, code))
                .inc();
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.inner.clone(),
        }
    }
}

/// A service whose RPCs are counted and timed.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<Inner>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Metered<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let method = metrics
            .methods
            .get(request.uri().path())
            .unwrap_or(&metrics.unknown)
            .clone();
        method.started.inc();
        let started = Instant::now();
        let future = inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let header_code = status_code(response.headers());
            let (parts, body) = response.into_parts();
            let mut body = MeteredBody {
                inner: body,
                pending: Some(Pending {
                    metrics,
                    method,
                    started,
                }),
            };
            // A trailers-only answer (every error tonic returns early) is done here.
            if let Some(code) = header_code
                && let Some(pending) = body.pending.take()
            {
                pending.finish(code);
            }
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// The `grpc-status` of a header or trailer map, if it has one.
fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// An RPC still to be counted as handled.
struct Pending {
    metrics: Arc<Inner>,
    method: Arc<MethodMetrics>,
    started: Instant,
}

impl Pending {
    fn finish(self, code: Code) {
        self.metrics.finish(&self.method, code, self.started);
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its RPC as handled once its status is known.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the trailers: the client went away (or the stream was reset).
            if let Some(pending) = this.project().pending.take() {
                pending.finish(Code::Cancelled);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(pending) = this.pending.take()
                {
                    pending.finish(status_code(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(Code::Unknown);
                }
            }
            Poll::Ready(None) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_served_services_is_listed_with_its_type() {
        let metrics = Metrics::default();
        let layer = GrpcMetricsLayer::new(&metrics, &["orders.v1.OrderCommands"]);
        let place = &layer.inner.methods["/orders.v1.OrderCommands/PlaceOrder"];
        assert_eq!(place.labels.grpc_type, "unary");
        assert_eq!(
            layer.inner.methods["/grpc.health.v1.Health/Watch"]
                .labels
                .grpc_type,
            "server_stream"
        );
        assert!(
            !layer
                .inner
                .methods
                .keys()
                .any(|p| p.starts_with("/orders.v1.OrderQueries/"))
        );
        let text = metrics.encode(false);
        assert!(text.contains(
            "grpc_server_handled_total{grpc_service=\"orders.v1.OrderCommands\",grpc_method=\"PlaceOrder\",grpc_type=\"unary\",grpc_code=\"OK\"} 0\n"
        ), "{text}");
        assert!(text.contains(
            "grpc_server_started_total{grpc_service=\"orders.v1.OrderCommands\",grpc_method=\"PlaceOrder\",grpc_type=\"unary\"} 0\n"
        ));
    }

    #[test]
    fn codes_are_spelled_like_go() {
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::Unauthenticated), "Unauthenticated");
        assert_eq!(code_name(Code::from_i32(9)), "FailedPrecondition");
    }
}
