//! The tower layer every server puts in front of its routes: health and
//! reflection pass; every other RPC needs a valid bearer token with the
//! scope its service requires. The verified [`Caller`] goes into the
//! request's extensions and its subject and customer into the RPC's span.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tonic::codegen::http;
use tower::{Layer, Service};

use super::{Caller, Denied, Verifier};

/// Path prefixes that need no token: health checking and reflection.
const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The scope one gRPC service needs, e.g. `("orders.v1.OrderQueries", "orders:read")`,
/// or one method of it (`"inventory.v1.Inventory/GetStock"`), which then
/// needs that scope instead of its service's.
pub type ServicePolicy = (&'static str, &'static str);

/// Checks bearer tokens in front of a server's routes; `disabled()` lets
/// everything through.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    policy: Option<Arc<Policy>>,
}

#[derive(Debug)]
struct Policy {
    verifier: Verifier,
    services: Vec<ServicePolicy>,
}

impl AuthLayer {
    /// Requires a token verified by `verifier`, with the scope each of
    /// `services` lists; a path of any other service needs a valid token.
    pub fn new(verifier: Verifier, services: &[ServicePolicy]) -> Self {
        Self {
            policy: Some(Arc::new(Policy {
                verifier,
                services: services.to_vec(),
            })),
        }
    }

    /// No authentication: every request passes and carries no caller.
    pub fn disabled() -> Self {
        Self { policy: None }
    }
}

impl Policy {
    /// The caller of a request to `path` with these headers, or why not.
    fn admit(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<Caller>, Denied> {
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Ok(None);
        }
        let token = bearer_token(headers)?;
        let caller = self.verifier.verify(token)?;
        let method = path.trim_start_matches('/');
        let service = method.split('/').next().unwrap_or("");
        let policy = |wanted: &str| self.services.iter().find(|(name, _)| *name == wanted);
        if let Some((_, scope)) = policy(method).or_else(|| policy(service))
            && !caller.has_scope(scope)
        {
            return Err(Denied::MissingScope(scope));
        }
        Ok(Some(caller))
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer_token(headers: &http::HeaderMap) -> Result<&str, Denied> {
    let missing = || {
        Denied::Unauthenticated(
            "missing bearer token: send metadata 'authorization: Bearer <token>'".into(),
        )
    };
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// A service behind [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    policy: Option<Arc<Policy>>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Authenticated<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The readied service answers this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(policy) = &self.policy else {
            return Box::pin(inner.call(request));
        };
        match policy.admit(request.uri().path(), request.headers()) {
            Err(denied) => {
                let status = tonic::Status::from(denied);
                Box::pin(async move {
                    tracing::info!(code = ?status.code(), message = status.message(), "refused by auth");
                    Ok(status.into_http())
                })
            }
            Ok(caller) => {
                let fields = caller
                    .as_ref()
                    .map(|c| (c.subject.clone(), c.customer_id.clone()));
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                let future = inner.call(request);
                // Polled inside the RPC's span (the server enters it on every poll).
                Box::pin(async move {
                    if let Some((subject, customer)) = fields {
                        let span = tracing::Span::current();
                        span.record("subject", subject.as_str());
                        if let Some(customer) = customer {
                            span.record("customer", customer.as_str());
                        }
                    }
                    future.await
                })
            }
        }
    }
}
