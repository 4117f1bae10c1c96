//! The gRPC edge of the query side: parses requests, reads the live
//! generation of the read model, and answers with freshness in the body and in
//! response metadata.
//!
//! Each request reads the generation that is live when it starts, to the end,
//! so a switch never splits one answer across two generations. Should that
//! generation's schema vanish under it (dropped after a switch this process
//! had not yet heard of), the request is retried once on the live one.

use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, metadata::MetadataValue};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::CustomerId,
    metrics::{Histogram, Metrics, SECONDS_BUCKETS, histogram},
    proto::{self, order_queries_server::OrderQueries},
    query::{
        QueryError,
        cache::ReadCache,
        generation::LiveProjection,
        live::{
            self, CustomerFeed, OrderFeed, Sources, StreamLimits, WatchOrdersStream, WatchStream,
        },
        page_token::{self, OrdersCursor},
        read_model::{OrderView, ReadModel, Until},
        reply::{freshness, order_to_proto},
        request::{self, ReadAt},
        watch::ProjectionWatch,
    },
    server::metadata_str,
};

/// Page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: u32 = 500;

/// `orders.v1.OrderQueries` over the live generation of the read model.
#[derive(Debug, Clone)]
pub struct QueryService {
    live: LiveProjection,
    watch: ProjectionWatch,
    max_wait: Duration,
    request_timeout: Duration,
    stopping: CancellationToken,
    cache: ReadCache,
    /// How long `min_version` reads waited (`orders_read_your_writes_wait_seconds`).
    waits: Histogram,
    /// How many `WatchOrder` and `WatchOrders` streams may be open.
    streams: StreamLimits,
}

impl QueryService {
    /// A service reading the `live` generation, waking `min_version` waiters through `watch`.
    ///
    /// A `min_version` wait lasts at most `max_wait`, ends early enough to
    /// answer within the caller's deadline and the server's `request_timeout`,
    /// and ends at once when `stopping` is cancelled (shutdown drains quickly).
    pub fn new(
        live: LiveProjection,
        watch: ProjectionWatch,
        max_wait: Duration,
        request_timeout: Duration,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            live,
            watch,
            max_wait,
            request_timeout,
            stopping,
            cache: ReadCache::new(0),
            waits: histogram(SECONDS_BUCKETS),
            streams: StreamLimits::default(),
        }
    }

    /// Registers the service's metrics in `metrics`.
    pub fn with_metrics(self, metrics: &Metrics) -> Self {
        metrics.register(
            "orders_read_your_writes_wait_seconds",
            "How long GetOrder with min_version waited for the projection to reach it.",
            self.waits.clone(),
        );
        self.streams.register(metrics);
        self
    }

    /// Answers `GetOrder` from `cache` where it holds the order (see `cache`).
    pub fn with_cache(mut self, cache: ReadCache) -> Self {
        self.cache = cache;
        self
    }

    /// What a stream reads with and listens to.
    fn sources(&self) -> Sources {
        Sources {
            live: self.live.clone(),
            watch: self.watch.clone(),
            cache: self.cache.clone(),
            stopping: self.stopping.clone(),
        }
    }

    /// The order from the cache, else from `read_model`, with the projection's freshness.
    async fn read_order(
        &self,
        read_model: &ReadModel,
        order_id: Uuid,
    ) -> Result<Option<(Arc<OrderView>, Option<DateTime<Utc>>)>, QueryError> {
        live::read_current(&self.cache, &self.live, read_model, order_id).await
    }

    /// Runs `read` on the live generation; if its schema vanished meanwhile,
    /// refreshes the live generation and runs it once more.
    async fn on_live<T, F, Fut>(&self, read: F) -> Result<T, QueryError>
    where
        F: Fn(ReadModel) -> Fut,
        Fut: Future<Output = Result<T, QueryError>>,
    {
        match read(self.live.read_model()).await {
            Err(error) if error.is_generation_gone() => {
                tracing::info!(%error, "generation gone under a read; retrying on the live one");
                self.live.refresh().await?;
                read(self.live.read_model()).await
            }
            other => other,
        }
    }

    async fn get_order(
        &self,
        read_model: ReadModel,
        request: &proto::GetOrderRequest,
        confined: Option<&CustomerId>,
        deadline: Instant,
    ) -> Result<Response<proto::GetOrderResponse>, QueryError> {
        let (order_id, at) = request::get_order(request)?;
        let (view, projected_at) = match at {
            ReadAt::Version(_) | ReadAt::Time(_) => {
                return self
                    .read_order_until(&read_model, order_id, at, confined)
                    .await;
            }
            ReadAt::Latest => self
                .read_order(&read_model, order_id)
                .await?
                .filter(|(view, _)| visible(view, confined))
                .ok_or(QueryError::NotFound(order_id))?,
            ReadAt::MinVersion(wanted) => {
                let waiting = Instant::now();
                let waited = self.wait_for(order_id, wanted, confined, deadline).await;
                self.waits.observe(waiting.elapsed().as_secs_f64());
                waited?
            }
        };
        let version = view.order.version;
        Ok(respond(
            proto::GetOrderResponse {
                order: Some(order_to_proto(&view)),
                freshness: Some(freshness(version, projected_at)),
            },
            version,
            projected_at,
        ))
    }

    /// The order as it was at a version or an instant (`at`); the freshness
    /// is the projection's now. Whoever may not see the order now may not see
    /// its past either.
    async fn read_order_until(
        &self,
        read_model: &ReadModel,
        order_id: Uuid,
        at: ReadAt,
        confined: Option<&CustomerId>,
    ) -> Result<Response<proto::GetOrderResponse>, QueryError> {
        let (now, projected_at) = self
            .read_order(read_model, order_id)
            .await?
            .filter(|(view, _)| visible(view, confined))
            .ok_or(QueryError::NotFound(order_id))?;
        let until = match at {
            ReadAt::Version(0) => return Err(QueryError::NotFound(order_id)),
            ReadAt::Version(wanted) if wanted > now.order.version => {
                return Err(QueryError::BeyondVersion {
                    order_id,
                    projected: now.order.version,
                    wanted,
                });
            }
            ReadAt::Version(wanted) => Until::Version(wanted),
            ReadAt::Time(instant) => Until::Time(instant),
            ReadAt::Latest | ReadAt::MinVersion(_) => Until::Version(now.order.version),
        };
        let then = match until {
            // The current version needs no fold.
            Until::Version(version) if version == now.order.version => now.as_ref().clone(),
            until => read_model
                .order_until(order_id, until)
                .await?
                .ok_or(QueryError::NotFound(order_id))?,
        };
        let projected = now.order.version;
        Ok(respond(
            proto::GetOrderResponse {
                order: Some(order_to_proto(&then)),
                freshness: Some(freshness(projected, projected_at)),
            },
            projected,
            projected_at,
        ))
    }

    /// Reads the order until it reaches `wanted`, sleeping between wake-ups
    /// (this process's commits and NOTIFYs), until `deadline`; each read is of
    /// the generation live at that moment.
    async fn wait_for(
        &self,
        order_id: Uuid,
        wanted: u64,
        confined: Option<&CustomerId>,
        deadline: Instant,
    ) -> Result<(Arc<OrderView>, Option<DateTime<Utc>>), QueryError> {
        // Subscribe before reading: a commit after the read still wakes us.
        let mut subscription = self.watch.subscribe(order_id);
        loop {
            let read_model = self.live.read_model();
            let read = self.read_order(&read_model, order_id).await?;
            // Another customer's order is answered as absent, at once.
            if read.as_ref().is_some_and(|(v, _)| !visible(v, confined)) {
                return Err(QueryError::NotFound(order_id));
            }
            let projected = read.as_ref().map_or(0, |(v, _)| v.order.version);
            if let Some(read) = read.filter(|(v, _)| v.order.version >= wanted) {
                return Ok(read);
            }
            if Instant::now() >= deadline || self.stopping.is_cancelled() {
                return Err(QueryError::NotYetProjected {
                    order_id,
                    projected,
                    wanted,
                });
            }
            tokio::select! {
                () = subscription.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.stopping.cancelled() => {}
            }
        }
    }

    async fn list_orders(
        &self,
        read_model: ReadModel,
        request: &proto::ListOrdersRequest,
        confined: Option<&CustomerId>,
    ) -> Result<Response<proto::ListOrdersResponse>, QueryError> {
        let (filter, cursor) = request::list_orders(request, confined)?;
        let size = page_size(request.page_size);
        let mut views = read_model.list_orders(&filter, cursor, size + 1).await?;
        let next_page_token = next_token(&mut views, size, |last| {
            page_token::encode_orders(
                &filter,
                OrdersCursor {
                    placed_at_micros: last.placed_at.timestamp_micros(),
                    order_id: last.order_id,
                },
            )
        });
        let projected_at = read_model.projected_at().await?;
        Ok(respond(
            proto::ListOrdersResponse {
                orders: views.iter().map(order_to_proto).collect(),
                next_page_token,
                freshness: Some(freshness(0, projected_at)),
            },
            0,
            projected_at,
        ))
    }

    async fn get_order_history(
        &self,
        read_model: ReadModel,
        request: &proto::GetOrderHistoryRequest,
        confined: Option<&CustomerId>,
    ) -> Result<Response<proto::GetOrderHistoryResponse>, QueryError> {
        let (order_id, after) = request::history(request)?;
        if confined.is_some()
            && !self
                .read_order(&read_model, order_id)
                .await?
                .is_some_and(|(view, _)| visible(&view, confined))
        {
            return Err(QueryError::NotFound(order_id));
        }
        let version = read_model
            .order_version(order_id)
            .await?
            .ok_or(QueryError::NotFound(order_id))?;
        let size = page_size(request.page_size);
        let mut rows = read_model
            .history(order_id, after, u64::from(size) + 1)
            .await?;
        let next_page_token = next_token(&mut rows, size, |&(version, _)| {
            page_token::encode_history(order_id, version)
        });
        let events = rows
            .iter()
            .map(|(version, payload)| {
                <proto::OrderEvent as prost::Message>::decode(payload.as_slice()).map_err(|e| {
                    QueryError::Corrupt(format!("history of {order_id} v{version}: {e}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let projected_at = read_model.projected_at().await?;
        Ok(respond(
            proto::GetOrderHistoryResponse {
                events,
                next_page_token,
                freshness: Some(freshness(version, projected_at)),
            },
            version,
            projected_at,
        ))
    }

    /// When a `min_version` wait must give up to still answer in time.
    fn deadline<T>(&self, request: &Request<T>) -> Instant {
        let now = Instant::now();
        let budget = grpc_timeout(request).map_or(self.request_timeout, |client| {
            client.min(self.request_timeout)
        });
        // Leave time to read and answer before the deadline expires.
        let margin = (budget / 5).clamp(Duration::from_millis(10), Duration::from_millis(250));
        now + budget.saturating_sub(margin).min(self.max_wait)
    }
}

#[tonic::async_trait]
impl OrderQueries for QueryService {
    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<proto::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        record_order(&request.get_ref().order_id);
        let confined = Caller::confinement(&request);
        let peer = request.remote_addr();
        let request = request.into_inner();
        let order_id = request::order_id(&request.order_id)?;
        let ticket = self.streams.admit(peer)?;
        let feed = OrderFeed {
            sources: self.sources(),
            order_id,
            from_version: request.from_version,
            confined,
        };
        Ok(Response::new(feed.start(ticket)))
    }

    type WatchOrdersStream = WatchOrdersStream;

    async fn watch_orders(
        &self,
        request: Request<proto::WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        let confined = Caller::confinement(&request);
        let peer = request.remote_addr();
        let (customer, status) = request::watch_orders(request.get_ref(), confined.as_ref())?;
        let ticket = self.streams.admit(peer)?;
        let feed = CustomerFeed {
            sources: self.sources(),
            customer,
            status,
        };
        Ok(Response::new(feed.start(ticket)))
    }

    async fn get_order(
        &self,
        request: Request<proto::GetOrderRequest>,
    ) -> Result<Response<proto::GetOrderResponse>, Status> {
        record_order(&request.get_ref().order_id);
        let deadline = self.deadline(&request);
        let confined = Caller::confinement(&request);
        let request = request.into_inner();
        Ok(self
            .on_live(|read_model| self.get_order(read_model, &request, confined.as_ref(), deadline))
            .await?)
    }

    async fn list_orders(
        &self,
        request: Request<proto::ListOrdersRequest>,
    ) -> Result<Response<proto::ListOrdersResponse>, Status> {
        let confined = Caller::confinement(&request);
        let request = request.into_inner();
        Ok(self
            .on_live(|read_model| self.list_orders(read_model, &request, confined.as_ref()))
            .await?)
    }

    async fn get_order_history(
        &self,
        request: Request<proto::GetOrderHistoryRequest>,
    ) -> Result<Response<proto::GetOrderHistoryResponse>, Status> {
        record_order(&request.get_ref().order_id);
        let confined = Caller::confinement(&request);
        let request = request.into_inner();
        Ok(self
            .on_live(|read_model| self.get_order_history(read_model, &request, confined.as_ref()))
            .await?)
    }
}

/// Whether a caller confined to `confined` (if anyone) may see `view`.
fn visible(view: &OrderView, confined: Option<&CustomerId>) -> bool {
    confined.is_none_or(|c| view.order.customer_id.as_ref() == Some(c))
}

/// Names the order in the RPC's span.
fn record_order(order_id: &str) {
    let span = tracing::Span::current();
    if !order_id.is_empty() {
        span.record("order_id", order_id);
    }
}

/// The caller's deadline from the `grpc-timeout` header, if it sent a valid one.
fn grpc_timeout<T>(request: &Request<T>) -> Option<Duration> {
    let value = metadata_str(request, "grpc-timeout")?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    if amount.is_empty() || amount.len() > 8 {
        return None;
    }
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The page size to use: the default for 0, clamped to `MAX_PAGE_SIZE`.
pub fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Cuts a `size + 1` read down to `size`, returning the token for the rest, if any.
fn next_token<T>(rows: &mut Vec<T>, size: u32, token: impl FnOnce(&T) -> String) -> String {
    let size = size as usize;
    if rows.len() <= size {
        return String::new();
    }
    rows.truncate(size);
    rows.last().map(token).unwrap_or_default()
}

/// Wraps a body with the freshness metadata.
fn respond<T>(body: T, version: u64, projected_at: Option<DateTime<Utc>>) -> Response<T> {
    let mut response = Response::new(body);
    let metadata = response.metadata_mut();
    metadata.insert("x-projected-version", MetadataValue::from(version));
    if let Some(at) = projected_at
        && let Ok(value) = at.to_rfc3339_opts(SecondsFormat::Micros, true).parse()
    {
        metadata.insert("x-projected-at", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", value.parse().unwrap());
        request
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(
            grpc_timeout(&with_timeout("300m")),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            grpc_timeout(&with_timeout("2S")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            grpc_timeout(&with_timeout("1M")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            grpc_timeout(&with_timeout("5u")),
            Some(Duration::from_micros(5))
        );
        assert_eq!(grpc_timeout(&with_timeout("123456789m")), None);
        assert_eq!(grpc_timeout(&with_timeout("m")), None);
        assert_eq!(grpc_timeout(&with_timeout("10x")), None);
        assert_eq!(grpc_timeout(&Request::new(())), None);
    }

    #[test]
    fn page_sizes_default_to_50_and_clamp_to_500() {
        assert_eq!(page_size(0), 50);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(500), 500);
        assert_eq!(page_size(10_000), 500);
    }

    #[test]
    fn a_full_read_yields_a_token_and_a_short_one_none() {
        let mut rows = vec![1, 2, 3];
        assert_eq!(next_token(&mut rows, 2, |last| last.to_string()), "2");
        assert_eq!(rows, vec![1, 2]);
        let mut rows = vec![1, 2];
        assert_eq!(next_token(&mut rows, 2, |last| last.to_string()), "");
    }
}
