//! Start-up of `order-query`: connect, migrate, find the live projection
//! generation, bind, then serve gRPC and run the projector until shutdown.
//! Readers and the projector follow the live generation when a rebuild switches.
//! Health reports NOT_SERVING while PostgreSQL or Kafka is unreachable or the
//! projection is stalled (`watchdog`); a background task that dies stops the
//! server with an error (`supervisor`).

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::consumer::BaseConsumer;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::QuerySettings,
    kafka,
    limits::MAX_QUERY_REQUEST_BYTES,
    metrics::{self, Gauge, Metrics},
    proto::order_queries_server::OrderQueriesServer,
    query::{
        QueryError,
        cache::ReadCache,
        generation::{Generations, LiveProjection},
        grpc::QueryService,
        projector::{FreezeSwitch, Projector, ProjectorMetrics},
        read_model::ReadModel,
        watch::ProjectionWatch,
        watchdog::{Lag, PartitionLag, Watchdog, WatchdogMetrics},
    },
    server::{self, Health},
    supervisor::Supervisor,
};

/// Connections of the projector's own pool (it writes one batch at a time).
const PROJECTOR_CONNECTIONS: u32 = 2;

/// How long a health probe of PostgreSQL or Kafka may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks that PostgreSQL and the Kafka broker answer and that the projection
/// moves, for the health service.
#[derive(Clone)]
pub struct DependencyProbe {
    live: LiveProjection,
    broker: Arc<BaseConsumer>,
    topic: String,
    watchdog: Arc<Mutex<Watchdog>>,
    /// Events parked in the live projection (`orders_projector_parked_events`).
    parked: Gauge,
}

impl DependencyProbe {
    /// A probe of the live projection's database and of the broker in `settings`.
    pub fn new(settings: &QuerySettings, live: LiveProjection) -> Result<Self, QueryError> {
        Ok(Self {
            live,
            broker: Arc::new(kafka::base_config(&settings.kafka)?.create()?),
            topic: settings.kafka.topic.clone(),
            watchdog: Arc::new(Mutex::new(Watchdog::new(Duration::from_millis(
                settings.stall_after_ms,
            )))),
            parked: Gauge::default(),
        })
    }

    /// The watchdog's metrics: stalls and lag.
    pub fn watchdog_metrics(&self) -> WatchdogMetrics {
        self.watchdog.lock().expect("watchdog lock").metrics()
    }

    /// Registers the probe's metrics (lag, stalls, parked events) in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        self.watchdog_metrics().register(metrics);
        metrics.register(
            "orders_projector_parked_events",
            "Events of the live projection parked behind a missing version.",
            self.parked.clone(),
        );
    }

    /// Whether `SELECT 1` and a metadata request of the topic each answer within a second.
    pub async fn reachable(&self) -> bool {
        self.lag().await.is_some()
    }

    /// Whether PostgreSQL and the broker are reachable and the projection is not stalled.
    pub async fn serving(&self) -> bool {
        let Some(lag) = self.lag().await else {
            return false;
        };
        let read_model = self.live.read_model();
        if let Ok(Ok(parked)) =
            tokio::time::timeout(PROBE_TIMEOUT, read_model.pending_event_count()).await
        {
            self.parked.set(parked);
        }
        self.watchdog
            .lock()
            .expect("watchdog lock")
            .observe(Instant::now(), &lag)
    }

    /// The stored positions against the topic's watermarks; `None` when the
    /// database or the broker does not answer within a second.
    async fn lag(&self) -> Option<Lag> {
        let (broker, topic) = (self.broker.clone(), self.topic.clone());
        let watermarks = tokio::task::spawn_blocking(move || {
            kafka::watermarks(&broker, &topic, PROBE_TIMEOUT).ok()
        });
        let read_model = self.live.read_model();
        let database_up = read_model.ping(PROBE_TIMEOUT).await;
        let watermarks = watermarks.await.ok().flatten()?;
        if !database_up {
            return None;
        }
        let stored = tokio::time::timeout(PROBE_TIMEOUT, read_model.all_positions(&self.topic))
            .await
            .ok()?
            .ok()?;
        Some(
            watermarks
                .into_iter()
                .map(|(p, (low, high))| {
                    let next = stored.get(&p).copied().unwrap_or(low);
                    (p, PartitionLag { next, high })
                })
                .collect(),
        )
    }
}

/// The `order-query` server, built and bound, not yet serving.
pub struct Application {
    settings: QuerySettings,
    listener: TcpListener,
    port: u16,
    live: LiveProjection,
    projector: Option<Projector>,
    metrics: Option<Arc<ProjectorMetrics>>,
    freeze: Option<FreezeSwitch>,
    watch: ProjectionWatch,
    probe: DependencyProbe,
    cache: ReadCache,
    registry: Metrics,
    metrics_listener: Option<TcpListener>,
    edge: server::Edge,
}

impl Application {
    /// Connects to PostgreSQL (refusing a superuser unless allowed), applies
    /// the read migrations to the live generation (`read_model`, generation
    /// 1, in a new database), binds the listener and, unless disabled, joins
    /// the consumer group.
    pub async fn build(settings: QuerySettings) -> Result<Self, QueryError> {
        let registry = Metrics::for_service("order-query");
        let edge = server::Edge::build(
            &settings.server,
            settings.listen_addr,
            &[server::QUERIES_POLICY],
            &registry,
        )?;
        let limits = &settings.server.limits;
        tracing::info!(database = %settings.database_url, "connecting to the read database");
        // Every connection of the server has the statement and lock timeouts:
        // the read models' pools derive their options from this one's, the
        // projector's and the NOTIFY listener's from the same.
        let options = limits.session_options(settings.database_url.connect_options()?);
        // No ping before each acquire: a broken connection fails its query,
        // and the ping would double the round trips of a read.
        let pool = PgPoolOptions::new()
            .max_connections(settings.server.db_max_connections)
            .acquire_timeout(limits.db_acquire_timeout())
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        crate::roles::refuse_superuser(&pool, settings.server.allow_superuser).await?;
        let generations = Generations::new(pool.clone());
        let live = generations.bootstrap().await?;
        tracing::info!(generation = live.generation, schema = %live.schema, "live projection generation");
        ReadModel::new(pool, &live.schema)?.migrate().await?;
        let live = LiveProjection::load(generations).await?;
        let watch = ProjectionWatch::default();
        let listener = TcpListener::bind(settings.listen_addr).await?;
        let port = listener.local_addr()?.port();
        let projector = if settings.projector {
            // Creates the topic only where this user may (a broker without
            // ACLs; else the admin principal created it); either way a missing
            // topic is logged, and the projector starts once it exists.
            if let Err(error) = kafka::ensure_topic(&settings.kafka).await {
                tracing::warn!(%error, topic = %settings.kafka.topic, "cannot ensure the topic exists");
            }
            // Its own connections: commits with `synchronous_commit=off` unless
            // configured otherwise, and never waiting behind readers for one.
            let durability = if settings.projector_synchronous_commit {
                "on"
            } else {
                "off"
            };
            let options = options.options([("synchronous_commit", durability)]);
            let write_pool = PgPoolOptions::new()
                .max_connections(PROJECTOR_CONNECTIONS)
                .acquire_timeout(limits.db_acquire_timeout())
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            Some(
                Projector::following(&settings, live.clone())?
                    .with_write_pool(write_pool)
                    .announcing_to(watch.clone()),
            )
        } else {
            None
        };
        let metrics = projector.as_ref().map(Projector::metrics);
        let freeze = projector.as_ref().map(Projector::freeze_switch);
        let cache = projector
            .as_ref()
            .map_or_else(|| ReadCache::new(0), Projector::read_cache);
        if let Some(metrics) = &metrics {
            metrics.register(&registry);
        }
        cache.register(&registry);
        let probe = DependencyProbe::new(&settings, live.clone())?;
        probe.register(&registry);
        let metrics_listener = match settings.metrics_addr.0 {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            port,
            projector,
            metrics,
            freeze,
            cache,
            registry,
            metrics_listener,
            edge,
            watch,
            probe,
            settings,
            live,
        })
    }

    /// The port the gRPC server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The projection this server reads and writes now (the live generation).
    pub fn read_model(&self) -> ReadModel {
        self.live.read_model()
    }

    /// The live generation as this server follows it.
    pub fn live_projection(&self) -> LiveProjection {
        self.live.clone()
    }

    /// The read-your-writes waiters of this server.
    pub fn projection_watch(&self) -> ProjectionWatch {
        self.watch.clone()
    }

    /// The projector's counters, when it runs in this process.
    pub fn projector_metrics(&self) -> Option<Arc<ProjectorMetrics>> {
        self.metrics.clone()
    }

    /// The read cache this server answers `GetOrder` from.
    pub fn read_cache(&self) -> ReadCache {
        self.cache.clone()
    }

    /// Freezes and thaws the projector, when it runs in this process (tests).
    pub fn projector_freeze(&self) -> Option<FreezeSwitch> {
        self.freeze.clone()
    }

    /// The watchdog's metrics: stalls of the projection seen since start, lag.
    pub fn watchdog_metrics(&self) -> WatchdogMetrics {
        self.probe.watchdog_metrics()
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        let listener = self.metrics_listener.as_ref()?;
        listener.local_addr().ok().map(|a| a.port())
    }

    /// Serves gRPC and runs the projector until `shutdown` resolves; then drains
    /// in-flight RPCs, finishes the batch in hand and leaves the consumer group.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), QueryError> {
        let Self {
            settings,
            listener,
            port,
            live,
            projector,
            watch,
            probe,
            cache,
            registry,
            metrics_listener,
            edge,
            ..
        } = self;
        let stop = CancellationToken::new();
        let mut tasks = Supervisor::new(stop.clone(), settings.fault_panic_task.clone());
        // The server pool's options: the session timeouts included.
        let listen_options = live.generations().pool().connect_options().as_ref().clone();
        tasks.spawn(
            "notify-listener",
            watch
                .clone()
                .listen(listen_options, live.clone(), stop.clone()),
        );
        if let Some(projector) = projector {
            tasks.spawn("projector", projector.run(stop.clone()));
        }
        if let Some(listener) = metrics_listener {
            tasks.spawn(
                "metrics",
                metrics::serve(listener, registry.clone(), stop.clone()),
            );
        }
        let failed = tasks.failed();
        let supervised = tokio::spawn(tasks.watch());

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health::new(reporter, "orders.v1.OrderQueries").await;
        let probing = health.watch(stop.clone(), move || {
            let probe = probe.clone();
            async move { probe.serving().await }
        });

        let service = QueryService::new(
            live,
            watch,
            Duration::from_millis(settings.max_wait_ms),
            settings.server.request_timeout(),
            stop.clone(),
        )
        .with_cache(cache)
        .with_metrics(&registry);
        let routes = server::standard_routes(health_service, settings.server.reflection)
            .add_service(
                OrderQueriesServer::new(service).max_decoding_message_size(MAX_QUERY_REQUEST_BYTES),
            );
        tracing::info!(port, projector = settings.projector, "order-query serving");
        let served = server::serve(listener, &settings.server, edge, routes, {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = stop.cancelled() => {}
                    () = failed.cancelled() => {}
                }
                stop.cancel();
            }
        })
        .await;

        stop.cancel();
        let supervised = supervised
            .await
            .unwrap_or_else(|error| panic!("the supervisor panicked: {error}"));
        let _ = probing.await;
        tracing::info!("order-query stopped");
        served?;
        Ok(supervised?)
    }
}
