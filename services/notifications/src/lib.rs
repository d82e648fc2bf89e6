//! The notifications service: turns call events into what people are told.
//!
//! ```text
//! CALL_EVENTS ──▶ consumer ──one tx──▶ notifications, live_feed, notification_deliveries (pending e-mails)
//!                    │                        │
//!                    ├─ after commit ─▶ core NATS skileez.notify.v1.user.<id> ──▶ live hub ──▶ WatchNotifications
//!                    └─ after commit ─▶ core NATS skileez.live.v1.user.<id> ───▶ live hub ──▶ WebSocket /v1/live
//!                                             │
//!                      delivery worker ◀──────┘ lease (SKIP LOCKED) ─▶ SMTP ─▶ outcome recorded
//! ```
//!
//! - [`consumer`] decides, per call event, the notifications of SPEC §4 for
//!   both participants ([`model`] says which moment, channel and invite, and
//!   when a reminder is stale), renders them in each recipient's zone
//!   ([`render`], [`invite`], [`mail`]) and records them in one transaction
//!   with the inbox entry, so redeliveries, restarts and several instances
//!   make one of each.
//! - [`worker`] sends the e-mails over SMTP ([`smtp`]) outside any
//!   transaction, with back-off, dead letters and the staleness check again.
//! - [`live`] streams in-app notifications and the live feed ([`feed`]:
//!   call changes, new calls, ready alerts, notifications) per user
//!   without gaps; [`api`] serves `NotificationService` and
//!   `DeliveryService` (gRPC, and gRPC-Web for browsers through
//!   `skileez-web`); [`ws`] serves the feed to browsers over a WebSocket.
//! - [`retention`] purges read notifications daily, once across instances.
//!
//! [`Application::build`] connects and binds (port 0 picks a free port,
//! reported by `local_addr`); [`Application::run`] serves until the shutdown
//! token is cancelled and returns once every task it started has drained.
//!
//! **Architecture invariant:** reads the directory (`participants`) and the
//! call events, writes only its own tables; never holds a database
//! transaction across SMTP or NATS.
//!
//! Metrics: `skileez_notification_deliveries_total{channel,kind,outcome}`,
//! `skileez_smtp_send_seconds` (histogram), `skileez_notifications_purged_total`,
//! `skileez_live_feed_purged_total`, `skileez_consumer_pending{consumer="notifications"}`,
//! `skileez_ws_connections` (gauge), `skileez_ws_closed_total{reason}`.

pub mod api;
pub mod cards;
pub mod config;
pub mod consumer;
pub mod convert;
pub mod error;
pub mod feed;
pub mod invite;
pub mod live;
pub mod mail;
pub mod model;
pub mod render;
pub mod retention;
pub mod smtp;
pub mod store;
pub mod worker;
pub mod ws;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use skileez_auth::Authenticator;
use skileez_proto::notifications as pb;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::cards::Cards;
pub use crate::config::Config;
use crate::consumer::{CONSUMER, EventHandler};
use crate::feed::FeedItem;
use crate::live::LiveHub;
use crate::render::Renderer;
use crate::smtp::Mailer;
use crate::worker::DeliveryWorker;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Admin(#[from] skileez_telemetry::admin::AdminError),
    #[error("cannot connect to PostgreSQL: {0}")]
    Database(#[source] sqlx::Error),
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Templates(#[from] render::RenderError),
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the WebSocket server failed: {0}")]
    ServeWs(#[source] std::io::Error),
}

/// Connects to PostgreSQL with the configured pool size.
pub async fn connect(config: &Config) -> Result<PgPool, StartError> {
    skileez_eventstore::pool_options(config.database_max_connections)
        .connect(config.database_url.expose_secret())
        .await
        .map_err(StartError::Database)
}

/// A bound, not yet serving, notifications service.
pub struct Application {
    config: Config,
    pool: PgPool,
    listener: TcpListener,
    local_addr: SocketAddr,
    ws_listener: Option<(TcpListener, SocketAddr)>,
    auth: Authenticator,
    mailer: Mailer,
    renderer: Arc<Renderer>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let pool = connect(&config).await?;
        Self::build_with_pool(config, pool).await
    }

    /// Builds on an existing pool (tests and `skileez dev` share one).
    /// Everything that can be checked without the network is checked here:
    /// the JWT key, the SMTP URL, the templates.
    pub async fn build_with_pool(config: Config, pool: PgPool) -> Result<Self, StartError> {
        let auth = Authenticator::new(&config.jwt)?;
        let mailer = Mailer::new(&config.smtp)?;
        let renderer = Arc::new(Renderer::new()?);
        let (listener, local_addr) = bind("the gRPC address", config.grpc_addr).await?;
        let ws_listener = match &config.ws {
            Some(ws) => Some(bind("the WebSocket address", ws.addr).await?),
            None => None,
        };
        Ok(Self {
            config,
            pool,
            listener,
            local_addr,
            ws_listener,
            auth,
            mailer,
            renderer,
        })
    }

    /// The gRPC (and gRPC-Web) address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The WebSocket's address, when it is on.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` is cancelled, then drains: the consumer's
    /// handlers finish, the sends in flight are recorded, the watch streams
    /// end.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let Application {
            config,
            pool,
            listener,
            local_addr,
            ws_listener,
            auth,
            mailer,
            renderer,
        } = self;
        let tasks = TaskTracker::new();
        let wake = Arc::new(Notify::new());
        let hub = LiveHub::<pb::Notification>::new();
        let feed_hub = LiveHub::<FeedItem>::new();
        let cards = Cards::default();

        tasks.spawn(run_bus_tasks(
            BusTasks {
                config: config.clone(),
                pool: pool.clone(),
                renderer,
                hub: hub.clone(),
                feed_hub: feed_hub.clone(),
                cards: cards.clone(),
                wake: wake.clone(),
            },
            tasks.clone(),
            shutdown.clone(),
        ));
        let worker = Arc::new(DeliveryWorker {
            pool: pool.clone(),
            mailer,
            config: config.delivery.clone(),
            cards,
            wake: wake.clone(),
        });
        tasks.spawn(worker.run(shutdown.clone()));
        tasks.spawn(retention::run(
            pool.clone(),
            config.retention.clone(),
            shutdown.clone(),
        ));

        if let (Some((ws_listener, ws_addr)), Some(ws_config)) = (ws_listener, config.ws.clone()) {
            let state = Arc::new(ws::WsState {
                pool: pool.clone(),
                auth: auth.clone(),
                hub: feed_hub,
                tasks: tasks.clone(),
                shutdown: shutdown.clone(),
                watch_poll: config.watch_poll,
                connections: Arc::new(Semaphore::new(ws_config.max_connections)),
                config: ws_config,
            });
            tracing::info!(url = %ws::url(ws_addr), "WebSocket for browsers listening");
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = ws::serve(ws_listener, state).await {
                    // The gRPC API keeps serving; the process is still
                    // useful, but not whole: stop it all.
                    tracing::error!(error = %StartError::ServeWs(error), "stopping the service");
                    shutdown.cancel();
                }
            });
        }

        let ctx = Arc::new(api::Shared {
            pool: pool.clone(),
            auth,
            hub,
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            watch_poll: config.watch_poll,
            wake,
            service_needs_certificate: config
                .tls
                .as_ref()
                .is_some_and(skileez_edge::ServerTls::service_needs_certificate),
        });
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        tasks.spawn(skileez_telemetry::health::watch_postgres(
            pool.clone(),
            "notifications",
            Some(skileez_telemetry::health::GrpcHealth {
                reporter: health_reporter,
                services: HEALTH_NAMES,
            }),
            shutdown.clone(),
        ));
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(skileez_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(skileez_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        tracing::info!(addr = %local_addr, smtp = %config::redacted_smtp_url(&config.smtp), cors_origins = ?config.cors_origins, "notifications service listening");
        let limits = config.limits;
        let mut server = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(limits.concurrency_per_connection)
            .timeout(limits.request_timeout);
        if let Some(tls) = &config.tls {
            server = server.tls_config(tls.tonic())?;
        }
        let result = server
            // Browsers: gRPC-Web over HTTP/1.1 and CORS for the web app.
            .accept_http1(true)
            .layer(skileez_web::layer(&config.cors_origins))
            .layer(skileez_telemetry::grpc::ServerLayer)
            .layer(skileez_edge::CatchPanicLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                pb::notification_service_server::NotificationServiceServer::new(
                    api::NotificationApi::new(ctx.clone()),
                )
                .max_decoding_message_size(limits.max_message_bytes),
            )
            .add_service(
                pb::delivery_service_server::DeliveryServiceServer::new(api::DeliveryApi::new(
                    ctx.clone(),
                ))
                .max_decoding_message_size(limits.max_message_bytes),
            )
            .serve_with_incoming_shutdown(incoming(listener), shutdown.clone().cancelled_owned())
            .await;
        // However serving ended, stop our own tasks and wait for them.
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        result?;
        Ok(())
    }
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let bound = match TcpListener::bind(addr).await {
        Ok(listener) => listener.local_addr().map(|local| (listener, local)),
        Err(error) => Err(error),
    };
    bound.map_err(|source| StartError::Bind { what, addr, source })
}

/// The accepted connections, with `TCP_NODELAY` set. An answer is several
/// small writes (headers, message, trailers); with Nagle's algorithm on, the
/// later ones wait for the client's delayed ACK, about 40 ms on Linux, on
/// every unary call. tonic sets it when it binds the address itself, not for
/// a listener handed to it.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        })
    })
}

/// The notifications service as a process (its own binary and `skileez serve`): the
/// configuration from the environment, the admin port
/// (`SKILEEZ_METRICS_ADDR`), then [`Application::run`] until `shutdown`.
/// The bound addresses go to stdout, where scripts and tests read them.
pub async fn serve_from_env(shutdown: CancellationToken) -> Result<(), StartError> {
    let config = Config::from_env()?;
    let admin = skileez_telemetry::process::start_admin(&shutdown).await?;
    let app = Application::build(config).await?;
    println!("notifications listening on {}", app.local_addr());
    if let Some(ws) = app.ws_addr() {
        println!("live WebSocket on {}", ws::url(ws));
    }
    if let Some(admin) = admin {
        println!("admin on {admin}");
    }
    app.run(shutdown).await
}

/// Builds and runs the service: the entry point of `main` and `skileez dev`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    Application::build(config).await?.run(shutdown).await
}

struct BusTasks {
    config: Config,
    pool: PgPool,
    renderer: Arc<Renderer>,
    hub: Arc<LiveHub<pb::Notification>>,
    feed_hub: Arc<LiveHub<FeedItem>>,
    cards: Cards,
    wake: Arc<Notify>,
}

/// Connects to NATS (retrying with back-off until it answers: the API and
/// the e-mails already queued do not need it), then runs the consumer, the
/// live hub and the lag gauge.
async fn run_bus_tasks(parts: BusTasks, tasks: TaskTracker, shutdown: CancellationToken) {
    let BusTasks {
        config,
        pool,
        renderer,
        hub,
        feed_hub,
        cards,
        wake,
    } = parts;
    let bus_config = skileez_bus::BusConfig {
        url: config.nats_url.clone(),
        stream_replicas: config.stream_replicas,
        security: config.nats_security.clone(),
        manage_topology: config.nats_manage_topology,
        ..skileez_bus::BusConfig::default()
    };
    let Some(bus) = skileez_bus::connect_until_up(
        &bus_config,
        "skileez-notifications",
        "notifications",
        "no new notifications until it answers",
        &tasks,
        &shutdown,
    )
    .await
    else {
        return;
    };
    cards.connect(bus.clone());
    tasks.spawn(hub.run(
        bus.client().clone(),
        bus.names().subject_root.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(feed_hub.run(
        bus.client().clone(),
        bus.names().subject_root.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(report_consumer_pending(bus.clone(), shutdown.clone()));
    let handler = Arc::new(EventHandler {
        pool,
        bus: bus.clone(),
        renderer,
        from: config.smtp.from.clone(),
        message_id_domain: config.smtp.message_id_domain().to_owned(),
        cards,
        wake,
    });
    let consumer = consumer_config(&bus);
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match skileez_bus::run_consumer(
            bus.clone(),
            consumer.clone(),
            handler.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "call-event consumer interrupted; retrying in {backoff:?}");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Every call event; a message whose handler keeps failing (the database
/// is down) is retried for about half an hour before it is dead-lettered.
pub fn consumer_config(bus: &skileez_bus::Bus) -> skileez_bus::ConsumerConfig {
    let mut consumer = skileez_bus::ConsumerConfig::new(
        CONSUMER,
        &bus.names().call_stream,
        vec![bus.names().call_subjects()],
    );
    consumer.max_deliver = 60;
    consumer.backoff = [1, 2, 5, 10, 30]
        .into_iter()
        .map(Duration::from_secs)
        .collect();
    consumer.lanes = 8;
    consumer
}

/// Messages the durable consumer has not been handed yet, as a gauge.
async fn report_consumer_pending(bus: skileez_bus::Bus, shutdown: CancellationToken) {
    loop {
        match skileez_bus::consumer_pending(&bus, &bus.names().call_stream, CONSUMER).await {
            Ok(pending) => metrics::gauge!("skileez_consumer_pending", "consumer" => CONSUMER)
                .set(pending as f64),
            Err(error) => tracing::debug!(%error, "cannot read the consumer's pending count"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
    }
}

/// Health names reported: the whole server ("") and each API.
const HEALTH_NAMES: &[&str] = &[
    "",
    "skileez.notifications.v1.NotificationService",
    "skileez.notifications.v1.DeliveryService",
];
