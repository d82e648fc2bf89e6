//! The timers service: turns time into commands.
//!
//! It consumes every call event ([`consumer`]) and keeps each call's timers in
//! PostgreSQL (`timers`, see [`model`]): `reminder_24h`, `reminder_1h`,
//! `ready`, `missed` and `auto_complete`, at the moments [`plan`] computes.
//! When one is due, the claim loop ([`engine`]) sends the matching command to
//! scheduling's `CallTimerService` as role `service` ([`fire`]); the call
//! aggregate's answer settles any race with a cancel or a join. Firing is at
//! least once, and once in effect: the commands are idempotent.
//!
//! Several instances share the work (claims with `FOR UPDATE SKIP LOCKED`
//! and a lease; a dead instance's timers come back when its lease ends).
//! Settled timers are purged after `retention` (with this consumer's inbox
//! rows), so the table holds about the pending timers plus a week.
//!
//! [`Application::build`] connects; [`Application::run`] runs until the
//! shutdown token is cancelled and returns once every task it started has
//! drained. [`list_timers`] is the read side for `skileez timers list`.
//!
//! **Architecture invariant:** never decides whether a command applies —
//! scheduling does. A timer here is only "it is time to ask".
//!
//! Metrics: `skileez_timer_lateness_seconds{kind}` (histogram: command sent −
//! due moment, for fired timers), `skileez_timers_pending` and
//! `skileez_timer_oldest_overdue_seconds` (gauges), and
//! `skileez_timers_fired_total{kind,outcome}`.

pub mod config;
pub mod consumer;
pub mod engine;
pub mod fire;
pub mod model;
pub mod plan;
pub mod store;
pub mod token;

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::config::Config;
pub use crate::model::{TimerKind, TimerRow, TimerState, list_timers};
use crate::{
    consumer::{CONSUMER, TimerConsumer},
    engine::{Engine, Wake},
    fire::Firer,
    token::TokenSource,
};

/// How often the gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(10);
/// How often settled timers are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Admin(#[from] skileez_telemetry::admin::AdminError),
    #[error("cannot connect to PostgreSQL: {0}")]
    Database(#[source] sqlx::Error),
    #[error("SKILEEZ_SCHEDULING_URL={url:?} is not a valid URL: {source}")]
    SchedulingUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Connects to PostgreSQL with the configured pool size.
pub async fn connect(config: &Config) -> Result<PgPool, StartError> {
    skileez_eventstore::pool_options(config.database_max_connections)
        .connect(config.database_url.expose_secret())
        .await
        .map_err(StartError::Database)
}

/// A connected, not yet running, timers service.
pub struct Application {
    config: Config,
    pool: PgPool,
    channel: tonic::transport::Channel,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let pool = connect(&config).await?;
        Self::build_with_pool(config, pool)
    }

    /// Builds on an existing pool (tests and `skileez dev` share one). The
    /// pool needs room for the claim loop, the settles and the consumer's
    /// transactions: a handful of connections.
    pub fn build_with_pool(config: Config, pool: PgPool) -> Result<Self, StartError> {
        // Connects on first use, and reconnects: scheduling may start later.
        let invalid_url = |source| StartError::SchedulingUrl {
            url: config.scheduling_url.clone(),
            source,
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(config.scheduling_url.clone())
            .map_err(invalid_url)?
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = &config.scheduling_tls {
            endpoint = endpoint.tls_config(tls.tonic()).map_err(invalid_url)?;
        }
        let channel = endpoint.connect_lazy();
        Ok(Self {
            config,
            pool,
            channel,
        })
    }

    /// This instance's name in `timers.lease_owner`.
    pub fn instance_id(&self) -> &str {
        &self.config.instance_id
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs the consumer, the claim loop, its listener and housekeeping until
    /// `shutdown` is cancelled; returns when they have drained.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let Application {
            config,
            pool,
            channel,
        } = self;
        let tasks = TaskTracker::new();
        let wake = Arc::new(Wake::new(config.claim_ahead));
        let firer = Arc::new(Firer::new(
            channel,
            TokenSource::new(config.token.clone()),
            config.max_attempts,
        ));
        if config.consume {
            tasks.spawn(consume(
                config.clone(),
                pool.clone(),
                wake.clone(),
                tasks.clone(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(skileez_telemetry::health::watch_postgres(
            pool.clone(),
            "timers",
            None,
            shutdown.clone(),
        ));
        tasks.spawn(engine::listen(
            config.database_url.expose_secret().to_owned(),
            wake.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(housekeeping(
            pool.clone(),
            config.retention,
            shutdown.clone(),
        ));
        let engine = Engine {
            pool,
            firer,
            wake,
            owner: config.instance_id.clone(),
            lease: config.lease,
            claim_ahead: config.claim_ahead,
            claim_batch: config.claim_batch,
            max_in_flight: config.max_in_flight,
            max_idle: config.max_idle,
        };
        tracing::info!(instance = %config.instance_id, scheduling = %config.scheduling_url, "timers service started");
        engine.run(shutdown.clone()).await;
        tasks.close();
        tasks.wait().await;
        Ok(())
    }
}

/// The timers service as a process (its own binary and `skileez serve`): the
/// configuration from the environment, the admin port
/// (`SKILEEZ_METRICS_ADDR`), then [`Application::run`] until `shutdown`.
/// The bound addresses go to stdout, where scripts and tests read them.
pub async fn serve_from_env(shutdown: CancellationToken) -> Result<(), StartError> {
    let config = Config::from_env()?;
    let admin = skileez_telemetry::process::start_admin(&shutdown).await?;
    let app = Application::build(config).await?;
    println!("timers instance {}", app.instance_id());
    if let Some(admin) = admin {
        println!("admin on {admin}");
    }
    app.run(shutdown).await
}

/// Builds and runs the service: the entry point of `main` and `skileez dev`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    Application::build(config).await?.run(shutdown).await
}

/// Connects to NATS (retrying until it answers: timers already written keep
/// firing meanwhile) and runs the call-event consumer.
async fn consume(
    config: Config,
    pool: PgPool,
    wake: Arc<Wake>,
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
    let handler = Arc::new(TimerConsumer {
        pool,
        policy: config.policy.clone(),
        wake,
        max_idle: config.max_idle,
    });
    // Once connected, async-nats reconnects by itself: only the consumer
    // is restarted when it fails.
    let Some(bus) = skileez_bus::connect_until_up(
        &bus_config,
        "skileez-timers",
        "timers",
        "timers already written keep firing",
        &tasks,
        &shutdown,
    )
    .await
    else {
        return;
    };
    let mut consumer = skileez_bus::ConsumerConfig::new(
        CONSUMER,
        &bus.names().call_stream,
        vec![bus.names().call_subjects()],
    );
    // A call event waiting for its predecessor (on another instance) comes
    // back quickly; a missed cancel is harmless (the aggregate refuses the
    // stale command) but a missed booking is not, so retry for long before
    // dead-lettering.
    consumer.backoff = vec![
        Duration::from_millis(100),
        Duration::from_millis(500),
        Duration::from_secs(2),
        Duration::from_secs(10),
        Duration::from_secs(30),
    ];
    consumer.max_deliver = 20;
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

/// The gauges, and the retention purge of settled timers and of this
/// consumer's inbox rows.
async fn housekeeping(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    let mut gauges = tokio::time::interval(GAUGE_EVERY);
    let mut purges = tokio::time::interval(PURGE_EVERY);
    gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    purges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = gauges.tick() => match store::pending_stats(&pool).await {
                Ok((pending, overdue)) => {
                    metrics::gauge!("skileez_timers_pending").set(pending as f64);
                    metrics::gauge!("skileez_timer_oldest_overdue_seconds").set(overdue);
                }
                Err(error) => tracing::debug!(%error, "cannot read the timer gauges"),
            },
            _ = purges.tick() => {
                let older_than = chrono::Utc::now()
                    - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
                match store::purge(&pool, older_than).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "purged settled timers"),
                    Err(error) => tracing::warn!(%error, "cannot purge settled timers"),
                }
                if let Err(error) = store::purge_inbox(&pool, CONSUMER, older_than).await {
                    tracing::warn!(%error, "cannot purge the timers' inbox");
                }
            }
        }
    }
}
