//! The scheduling service: the gRPC API for booking and following calls, the
//! command handling that is the only writer of call events, and the read
//! models written in the same transaction as those events.
//!
//! `Application::build` connects and binds (port 0 picks a free port, which
//! `local_addr` reports); `Application::run` serves until the shutdown token is
//! cancelled and returns once every task it started has finished.

pub mod api;
pub mod app;
pub mod auth;
pub mod availability;
pub mod config;
mod counters;
mod deadline;
pub mod error;
pub mod feed;
pub mod ingest;
pub mod mapping;
pub mod names;
pub mod relay;
pub mod repo;
pub mod validate;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use skileez_proto::scheduling as pb;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::config::Config;
use crate::{api::Shared, app::Scheduler, auth::Authenticator, feed::FeedHub};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Admin(#[from] skileez_telemetry::admin::AdminError),
    #[error("cannot connect to PostgreSQL: {0}")]
    Database(#[source] sqlx::Error),
    #[error("cannot bind the gRPC address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Connects to PostgreSQL with the configured pool size.
pub async fn connect(config: &Config) -> Result<PgPool, StartError> {
    connect_pool(config, config.database_max_connections).await
}

async fn connect_pool(config: &Config, size: u32) -> Result<PgPool, StartError> {
    skileez_eventstore::pool_options(size)
        .connect(config.database_url.expose_secret())
        .await
        .map_err(StartError::Database)
}

/// A bound, not yet serving, scheduling service.
pub struct Application {
    config: Config,
    pool: PgPool,
    /// The query RPCs' own pool ([`Config::database_read_connections`]).
    reads: PgPool,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let pool = connect(&config).await?;
        let reads = connect_pool(&config, config.database_read_connections).await?;
        Self::build_with_pools(config, pool, reads).await
    }

    /// Builds on an existing pool, for commands and queries alike (tests and
    /// `skileez dev` share one).
    pub async fn build_with_pool(config: Config, pool: PgPool) -> Result<Self, StartError> {
        Self::build_with_pools(config, pool.clone(), pool).await
    }

    async fn build_with_pools(
        config: Config,
        pool: PgPool,
        reads: PgPool,
    ) -> Result<Self, StartError> {
        // Fail fast on a bad key rather than at the first request.
        Authenticator::new(&config.jwt)?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
        Ok(Self {
            config,
            pool,
            reads,
            listener,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests
    /// and watch streams.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let Application {
            config,
            pool,
            reads,
            listener,
            local_addr,
        } = self;
        let scheduler = Scheduler::new(pool.clone(), config.policy.clone());
        let hub = FeedHub::new();
        let tasks = TaskTracker::new();
        let ctx = Arc::new(Shared {
            scheduler: scheduler.clone(),
            reads,
            auth: Authenticator::new(&config.jwt)?,
            service_needs_certificate: config
                .tls
                .as_ref()
                .is_some_and(skileez_edge::ServerTls::service_needs_certificate),
            rate_limiter: skileez_edge::RateLimiter::new(config.rate_limit),
            names: crate::names::NameCache::new(config.name_cache_entries),
            hub: hub.clone(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        });
        tasks.spawn(forget_idle_users(
            ctx.rate_limiter.clone(),
            shutdown.clone(),
        ));

        tasks.spawn(hub.run(
            scheduler.store().clone(),
            config.policy.clone(),
            scheduler.committed(),
            config.feed_poll_interval,
            shutdown.clone(),
        ));

        tasks.spawn(relay::wake_other_instances(
            pool.clone(),
            scheduler.committed(),
            scheduler.relay_leading(),
            shutdown.clone(),
        ));
        if config.relay || config.ingest {
            tasks.spawn(run_bus_tasks(
                config.clone(),
                scheduler.clone(),
                tasks.clone(),
                shutdown.clone(),
            ));
        }

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        tasks.spawn(skileez_telemetry::health::watch_postgres(
            pool.clone(),
            "scheduling",
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

        tracing::info!(addr = %local_addr, "scheduling service listening");
        let server_shutdown = shutdown.clone();
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
            .layer(deadline::DeadlineLayer::new(limits.request_timeout))
            .layer(skileez_edge::CatchPanicLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                pb::scheduling_service_server::SchedulingServiceServer::new(
                    api::scheduling::SchedulingApi::new(ctx.clone()),
                )
                .max_decoding_message_size(limits.max_message_bytes),
            )
            .add_service(
                pb::call_timer_service_server::CallTimerServiceServer::new(
                    api::timers::TimerApi::new(ctx.clone()),
                )
                .max_decoding_message_size(limits.max_message_bytes),
            )
            .add_service(
                pb::directory_service_server::DirectoryServiceServer::new(
                    api::directory::DirectoryApi::new(ctx.clone()),
                )
                .max_decoding_message_size(limits.max_message_bytes),
            )
            .add_service(
                pb::availability_service_server::AvailabilityServiceServer::new(
                    api::availability::AvailabilityApi::new(ctx.clone()),
                )
                .max_decoding_message_size(limits.max_message_bytes),
            )
            .serve_with_incoming_shutdown(incoming(listener), server_shutdown.cancelled_owned())
            .await;
        // However serving ended, stop our own tasks and wait for them.
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        result?;
        Ok(())
    }
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

/// The scheduling service as a process (its own binary and `skileez serve`): the
/// configuration from the environment, the admin port
/// (`SKILEEZ_METRICS_ADDR`), then [`Application::run`] until `shutdown`.
/// The bound addresses go to stdout, where scripts and tests read them.
pub async fn serve_from_env(shutdown: CancellationToken) -> Result<(), StartError> {
    let config = Config::from_env()?;
    let admin = skileez_telemetry::process::start_admin(&shutdown).await?;
    let app = Application::build(config).await?;
    println!("scheduling service on {}", app.local_addr());
    if let Some(admin) = admin {
        println!("admin on {admin}");
    }
    app.run(shutdown).await
}

/// Forgets rate-limit state of users who have been quiet, once a minute.
async fn forget_idle_users(limiter: skileez_edge::RateLimiter, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => limiter.forget_idle(),
        }
    }
}

/// Builds and runs the service: the entry point of `main` and `skileez dev`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    Application::build(config).await?.run(shutdown).await
}

/// Connects to NATS (retrying with back-off until it answers, so the service
/// serves bookings even while NATS is down) and then starts the relay and the
/// directory ingest.
async fn run_bus_tasks(
    config: Config,
    scheduler: Scheduler,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let bus_config = skileez_bus::BusConfig {
        url: config.nats_url.clone(),
        stream_replicas: config.stream_replicas,
        security: config.nats_security.clone(),
        manage_topology: config.nats_manage_topology,
        ..skileez_bus::BusConfig::default()
    };
    let Some(bus) = skileez_bus::connect_until_up(
        &bus_config,
        "skileez-scheduling",
        "scheduling",
        "events wait in the store",
        &tasks,
        &shutdown,
    )
    .await
    else {
        return;
    };
    if config.relay {
        let relay = relay::Relay {
            store: scheduler.store().clone(),
            bus: bus.clone(),
            policy: config.policy.clone(),
            committed: scheduler.committed(),
            leading: scheduler.relay_leading(),
            database_url: config.database_url.expose_secret().to_owned(),
        };
        tasks.spawn(relay.run(shutdown.clone()));
    }
    if config.ingest {
        tasks.spawn(report_consumer_pending(
            bus.clone(),
            ingest::CONSUMER,
            shutdown.clone(),
        ));
        let handler = Arc::new(ingest::DirectoryIngest {
            pool: scheduler.pool().clone(),
        });
        let consumer = skileez_bus::ConsumerConfig::new(
            ingest::CONSUMER,
            &bus.names().platform_stream,
            bus.names().platform_subjects(),
        );
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_millis(200);
            while !shutdown.is_cancelled() {
                match skileez_bus::run_consumer(bus.clone(), consumer.clone(), handler.clone(), shutdown.clone()).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "directory ingest interrupted; retrying in {backoff:?}");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }
}

/// Messages the durable consumer has not been handed yet, as a gauge.
async fn report_consumer_pending(
    bus: skileez_bus::Bus,
    durable: &'static str,
    shutdown: CancellationToken,
) {
    loop {
        match skileez_bus::consumer_pending(&bus, &bus.names().platform_stream, durable).await {
            Ok(pending) => metrics::gauge!("skileez_consumer_pending", "consumer" => durable)
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
    "skileez.scheduling.v1.SchedulingService",
    "skileez.scheduling.v1.CallTimerService",
    "skileez.scheduling.v1.DirectoryService",
    "skileez.scheduling.v1.AvailabilityService",
];
