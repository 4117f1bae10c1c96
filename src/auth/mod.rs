//! Who may call what: bearer JWTs checked against a JWKS file, one scope per
//! service (or per method where a service's reads and writes differ), and an
//! optional customer confinement. One tower layer
//! ([`AuthLayer`]) does it for every server; handlers read the verified
//! [`Caller`] from the request's extensions.

mod keys;
mod layer;

use std::path::Path;

pub use keys::{
    GeneratedKeys, Minted, TokenRequest, Verifier, generate_keys, mint, parse_duration,
};
pub use layer::{AuthLayer, ServicePolicy};
use tonic::Status;

use crate::domain::CustomerId;

/// Scope every `orders.v1.OrderQueries` RPC needs.
pub const SCOPE_READ: &str = "orders:read";
/// Scope every `orders.v1.OrderCommands` RPC needs.
pub const SCOPE_WRITE: &str = "orders:write";

/// Scope of the Inventory service's reads (`GetStock`, `GetReservation`).
pub const SCOPE_INVENTORY_READ: &str = "inventory:read";
/// Scope of the Inventory service's other RPCs (stock and reservations).
pub const SCOPE_INVENTORY_WRITE: &str = "inventory:write";
/// Scope of the Payments service's reads (`GetPayment`).
pub const SCOPE_PAYMENTS_READ: &str = "payments:read";
/// Scope of the Payments service's other RPCs (authorize, capture, void).
pub const SCOPE_PAYMENTS_WRITE: &str = "payments:write";
/// Scope of the fulfilment admin's reads (`ListSagas`, `GetSaga`).
pub const SCOPE_FULFILMENT_READ: &str = "fulfilment:read";
/// Scope of the fulfilment admin's actions (`RetrySaga`, `CancelSaga`).
pub const SCOPE_FULFILMENT_ADMIN: &str = "fulfilment:admin";

/// The verified identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject (`sub`).
    pub subject: String,
    /// The customer the caller is confined to (`customer_id` claim), if any.
    pub customer_id: Option<CustomerId>,
    scopes: Vec<String>,
}

impl Caller {
    /// A caller with these scopes (tests and embedding).
    pub fn new(
        subject: impl Into<String>,
        scopes: impl IntoIterator<Item = impl Into<String>>,
        customer_id: Option<CustomerId>,
    ) -> Self {
        Self {
            subject: subject.into(),
            customer_id,
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The caller the auth layer attached to `request`; `None` when auth is
    /// disabled (then nothing is confined).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Caller> {
        request.extensions().get::<Caller>()
    }

    /// The customer `request`'s caller is confined to, if any.
    pub fn confinement<T>(request: &tonic::Request<T>) -> Option<CustomerId> {
        Self::of(request).and_then(|c| c.customer_id.clone())
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No usable bearer token: UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token without the needed scope: PERMISSION_DENIED.
    #[error("the token lacks the scope {0}")]
    MissingScope(&'static str),
}

impl From<Denied> for Status {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Unauthenticated(message) => Status::unauthenticated(message),
            denied @ Denied::MissingScope(_) => Status::permission_denied(denied.to_string()),
        }
    }
}

/// Why the authentication configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Auth is on and no JWKS file was given.
    #[error(
        "authentication is on but no JWKS file is configured: set ORDERS_AUTH_JWKS_FILE (--auth-jwks-file), or run with --auth=disabled"
    )]
    NoJwks,
    /// A key or JWKS file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key or JWKS file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The JWKS file is not a usable key set.
    #[error("the JWKS file {path} is not usable: {reason}")]
    Jwks {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The signing key is not a supported PKCS#8 key.
    #[error("the signing key is not usable: {0}")]
    SigningKey(String),
}

impl AuthSetupError {
    fn read(path: &Path, source: std::io::Error) -> Self {
        Self::Read {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A client-side interceptor that sends `authorization: Bearer <token>` on
/// every call (Rust clients of these servers: tests, the bench, other services).
#[derive(Clone, Default)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(<set>)"
        } else {
            "BearerToken(none)"
        })
    }
}

impl BearerToken {
    /// Sends `token`.
    pub fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        let mut value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }

    /// Sends no token (for servers run with `--auth=disabled`).
    pub fn none() -> Self {
        Self(None)
    }

    /// The token in `ORDERS_TOKEN` (what `scripts/dev env` exports), or none.
    pub fn from_env() -> Self {
        std::env::var("ORDERS_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .and_then(|t| Self::new(t.trim()).ok())
            .unwrap_or_default()
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A client channel that sends a [`BearerToken`] on every call:
/// `OrderCommandsClient::with_interceptor(channel, token)` has this type.
pub type AuthedChannel = tonic::codegen::InterceptedService<tonic::transport::Channel, BearerToken>;
