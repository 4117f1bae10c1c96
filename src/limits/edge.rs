//! The tower layer in front of every RPC of both servers. It sheds load
//! (a process-wide number of RPCs in flight; one more is refused with
//! RESOURCE_EXHAUSTED at once instead of queueing without bound), refuses
//! malformed correlation metadata before the handler sees it, and answers an
//! oversized request body with RESOURCE_EXHAUSTED. Health checks pass
//! untouched, so that a busy server still answers its probes.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;
use tonic::{Code, Status, body::Body, codegen::http};
use tower::{Layer, Service};

use super::correlation;

/// Path prefix of the gRPC health service's methods.
const HEALTH: &str = "/grpc.health.v1.Health/";

/// How tonic's codec starts the message of a request larger than a service's
/// `max_decoding_message_size` (tonic answers OUT_OF_RANGE; gRPC's own
/// implementations answer RESOURCE_EXHAUSTED, which is what clients expect).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Wraps a server's routes in `Edge`.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    in_flight: Arc<Semaphore>,
    limit: usize,
}

impl EdgeLayer {
    /// At most `max_in_flight` RPCs (health checks aside) run at once.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            limit: max_in_flight,
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            in_flight: self.in_flight.clone(),
            limit: self.limit,
        }
    }
}

/// The routes of a server behind the load shedding and metadata checks.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    in_flight: Arc<Semaphore>,
    limit: usize,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S> Service<http::Request<Body>> for Edge<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The service polled ready serves this call; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if request.uri().path().starts_with(HEALTH) {
            return Box::pin(inner.call(request));
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::debug!(limit = self.limit, "RPC shed: too many in flight");
            return refuse(Status::resource_exhausted(format!(
                "the server is at its limit of {} requests in flight; retry later",
                self.limit
            )));
        };
        if let Err(invalid) = correlation::read(request.headers()) {
            return refuse(invalid.into());
        }
        Box::pin(async move {
            let response = inner.call(request).await;
            // Once the response is ready, a unary RPC's work is done; a
            // stream's goes on in its own task, limited where it is served
            // (`query::live`).
            drop(permit);
            response.map(too_large_as_resource_exhausted)
        })
    }
}

fn refuse<E: Send + 'static>(status: Status) -> Answer<E> {
    Box::pin(std::future::ready(Ok(status.into_http())))
}

/// Tonic's refusal of an oversized body (before decoding it), as the
/// RESOURCE_EXHAUSTED gRPC prescribes; any other answer unchanged.
fn too_large_as_resource_exhausted(response: http::Response<Body>) -> http::Response<Body> {
    match response.extensions().get::<Status>() {
        Some(status)
            if status.code() == Code::OutOfRange
                && status.message().starts_with(TONIC_TOO_LARGE) =>
        {
            Status::resource_exhausted(status.message().to_owned()).into_http()
        }
        _ => response,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::oneshot;

    use super::*;

    /// Calls `service` once it is ready (tower's `oneshot`, without the `util` feature).
    async fn call_ready<S: Service<http::Request<Body>>>(
        mut service: S,
        request: http::Request<Body>,
    ) -> Result<S::Response, S::Error> {
        std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
        service.call(request).await
    }

    /// A service answering OK once `release` fires (or at once without one).
    #[derive(Clone)]
    struct Held(Arc<std::sync::Mutex<Option<oneshot::Receiver<()>>>>);

    impl Service<http::Request<Body>> for Held {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Answer<Infallible>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            let release = self.0.lock().unwrap().take();
            Box::pin(async move {
                if let Some(release) = release {
                    let _ = release.await;
                }
                Ok(Status::ok("").into_http())
            })
        }
    }

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(path)
            .body(Body::empty())
            .unwrap()
    }

    fn code(response: &http::Response<Body>) -> Code {
        response.extensions().get::<Status>().unwrap().code()
    }

    #[tokio::test]
    async fn a_full_server_sheds_at_once_but_answers_health_checks() {
        let (release, held) = oneshot::channel();
        let service = EdgeLayer::new(1).layer(Held(Arc::new(std::sync::Mutex::new(Some(held)))));
        let first = tokio::spawn(call_ready(
            service.clone(),
            request("/orders.v1.OrderQueries/GetOrder"),
        ));
        tokio::task::yield_now().await;
        let shed = call_ready(service.clone(), request("/orders.v1.OrderQueries/GetOrder"))
            .await
            .unwrap();
        assert_eq!(code(&shed), Code::ResourceExhausted);
        let health = call_ready(service.clone(), request("/grpc.health.v1.Health/Check"))
            .await
            .unwrap();
        assert_eq!(code(&health), Code::Ok);
        release.send(()).unwrap();
        assert_eq!(code(&first.await.unwrap().unwrap()), Code::Ok);
        let after = call_ready(service, request("/orders.v1.OrderQueries/GetOrder"))
            .await
            .unwrap();
        assert_eq!(code(&after), Code::Ok, "the slot is free again");
    }

    #[tokio::test]
    async fn a_malformed_traceparent_is_refused_before_the_handler() {
        let service = EdgeLayer::new(4).layer(Held(Default::default()));
        let mut bad = request("/orders.v1.OrderCommands/PlaceOrder");
        bad.headers_mut()
            .insert(correlation::TRACEPARENT, "not-a-trace".parse().unwrap());
        let response = call_ready(service, bad).await.unwrap();
        assert_eq!(code(&response), Code::InvalidArgument);
    }

    #[test]
    fn only_tonics_oversize_refusal_becomes_resource_exhausted() {
        let too_large = Status::out_of_range(format!(
            "{TONIC_TOO_LARGE}: found 4000000 bytes, the limit is: 65536 bytes"
        ))
        .into_http();
        assert_eq!(
            code(&too_large_as_resource_exhausted(too_large)),
            Code::ResourceExhausted
        );
        let other = Status::out_of_range("page 7 of 3").into_http();
        assert_eq!(
            code(&too_large_as_resource_exhausted(other)),
            Code::OutOfRange
        );
    }
}
