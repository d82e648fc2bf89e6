//! The three processes in play: the scheduling service (with its outbox
//! relay) in-process on a free port, a private NATS server, a fresh
//! PostgreSQL database, and timers instances — in-process, or the
//! `skileez-timers` binary as a real process.

#![allow(dead_code)] // each test binary uses a different part of it

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration as StdDuration,
};

use chrono::{DateTime, Duration, DurationRound, Utc};
use skileez_domain::{ActorRole, Policy};
use skileez_proto::scheduling as pb;
use skileez_scheduling::{Application, Config, auth::TokenIssuer};
use skileez_testkit::{TestDatabase, nats::TestNats};
use skileez_timers::{TimerKind, TimerRow, TimerState};
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status, metadata::MetadataValue, service::interceptor::InterceptedService,
    transport::Channel,
};
use uuid::Uuid;

pub const SECRET: &str = "test-secret-test-secret-test-secret";

pub type Scheduling =
    pb::scheduling_service_client::SchedulingServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(String);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value: MetadataValue<_> = format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| Status::internal("bad token"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// A policy with lead times of seconds, so a whole lifecycle runs in a test.
pub fn fast_policy() -> Policy {
    Policy {
        min_notice: Duration::seconds(2),
        ready_lead: Duration::seconds(2),
        missed_after: Duration::seconds(2),
        overrun_grace: Duration::seconds(1),
        reschedule_cutoff: Duration::seconds(2),
        late_cancel_window: Duration::seconds(30),
        reminder_day_lead: Duration::seconds(20),
        reminder_hour_lead: Duration::seconds(10),
        start_granularity: Duration::seconds(1),
        ..Policy::default()
    }
}

/// Scheduling, NATS and PostgreSQL, and the timers instances added to them.
pub struct World {
    pub db: TestDatabase,
    pub nats: TestNats,
    pub policy: Policy,
    pub scheduling_addr: SocketAddr,
    issuer: TokenIssuer,
    channel: Channel,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    timers: Vec<(String, CancellationToken, JoinHandle<()>)>,
}

impl World {
    /// Scheduling (relay on) with `policy`, on a private NATS and a fresh
    /// database; no timers instance yet.
    pub async fn start(policy: Policy) -> World {
        World::start_with(policy, &[], None).await
    }

    /// [`World::start`] with `extra` variables for scheduling (its TLS) and,
    /// when scheduling serves TLS, the CA its certificate is signed by.
    pub async fn start_with(
        policy: Policy,
        extra: &[(&'static str, String)],
        tls_ca_pem: Option<&str>,
    ) -> World {
        let _ = tracing_subscriber_init();
        let nats = TestNats::new().await;
        let db = TestDatabase::new().await;
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("SKILEEZ_JWT_SECRET", SECRET.to_owned()),
            ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.url()),
            ("SKILEEZ_FEED_POLL_INTERVAL", "50ms".to_owned()),
            ("SKILEEZ_RELAY", "true".to_owned()),
            ("SKILEEZ_INGEST", "false".to_owned()),
            ("NATS_URL", nats.url()),
            ("SKILEEZ_RATE_LIMIT_PER_MINUTE", "0".to_owned()),
        ]);
        vars.extend(extra.iter().cloned());
        let mut config = Config::from_lookup(|name| vars.get(name).cloned()).expect("config");
        config.policy = policy.clone();
        let issuer = TokenIssuer::from_config(&config.jwt).expect("HS256");
        let app = Application::build_with_pool(config, db.pool().clone())
            .await
            .expect("scheduling builds");
        let scheduling_addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let server = tokio::spawn(async move { app.run(token).await.expect("scheduling runs") });
        let channel = match tls_ca_pem {
            None => Channel::from_shared(format!("http://{scheduling_addr}"))
                .expect("url")
                .connect_lazy(),
            Some(ca) => {
                Channel::from_shared(format!("https://localhost:{}", scheduling_addr.port()))
                    .expect("url")
                    .tls_config(
                        tonic::transport::ClientTlsConfig::new()
                            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                            .domain_name("localhost"),
                    )
                    .expect("tls")
                    .connect_lazy()
            }
        };
        World {
            db,
            nats,
            policy,
            scheduling_addr,
            issuer,
            channel,
            shutdown,
            tasks: vec![server],
            timers: Vec::new(),
        }
    }

    /// The environment of a timers instance named `instance`, matching
    /// scheduling's policy; `extra` adds or overrides.
    pub fn timers_env(&self, instance: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let ms = |d: Duration| format!("{}ms", d.num_milliseconds());
        let mut vars: HashMap<String, String> = [
            ("DATABASE_URL", self.db.url()),
            ("NATS_URL", self.nats.url()),
            (
                "SKILEEZ_SCHEDULING_URL",
                format!("http://{}", self.scheduling_addr),
            ),
            ("SKILEEZ_JWT_SECRET", SECRET.to_owned()),
            ("SKILEEZ_READY_LEAD", ms(self.policy.ready_lead)),
            ("SKILEEZ_MISSED_AFTER", ms(self.policy.missed_after)),
            ("SKILEEZ_OVERRUN_GRACE", ms(self.policy.overrun_grace)),
            (
                "SKILEEZ_REMINDER_LEADS",
                format!(
                    "{},{}",
                    ms(self.policy.reminder_day_lead),
                    ms(self.policy.reminder_hour_lead)
                ),
            ),
            ("SKILEEZ_TIMERS_INSTANCE", instance.to_owned()),
            ("SKILEEZ_TIMERS_DATABASE_MAX_CONNECTIONS", "6".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        vars
    }

    /// Starts a timers instance in-process.
    pub async fn add_timers(&mut self, instance: &str, extra: &[(&str, &str)]) {
        let vars = self.timers_env(instance, extra);
        let config =
            skileez_timers::Config::from_lookup(|name| vars.get(name).cloned()).expect("config");
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .connect_with(self.db.connect_options())
            .await
            .expect("timers pool");
        let app = skileez_timers::Application::build_with_pool(config, pool).expect("timers build");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { app.run(token).await.expect("timers run") });
        self.timers.push((instance.to_owned(), shutdown, task));
    }

    /// Starts the `skileez-timers` binary as a real process.
    pub fn spawn_timers_process(&self, instance: &str, extra: &[(&str, &str)]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_skileez-timers"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            // Side by side with other tests: no fixed admin port.
            .env("SKILEEZ_METRICS_ADDR", "127.0.0.1:0")
            .envs(self.timers_env(instance, extra))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        command.spawn().expect("skileez-timers starts")
    }

    /// Stops the in-process timers instances and waits for them to drain.
    pub async fn stop_timers(&mut self) {
        for (_, token, _) in &self.timers {
            token.cancel();
        }
        for (name, _, task) in self.timers.drain(..) {
            task.await
                .unwrap_or_else(|e| panic!("timers {name} failed: {e}"));
        }
    }

    pub fn token(&self, sub: &str, role: ActorRole) -> String {
        self.issuer.mint(sub, role, StdDuration::from_secs(3600))
    }

    pub fn as_user(&self, sub: &str, role: ActorRole) -> Scheduling {
        pb::scheduling_service_client::SchedulingServiceClient::with_interceptor(
            self.channel.clone(),
            Bearer(self.token(sub, role)),
        )
    }

    pub fn student(&self, id: &str) -> Scheduling {
        self.as_user(id, ActorRole::Student)
    }

    pub fn coach(&self, id: &str) -> Scheduling {
        self.as_user(id, ActorRole::Coach)
    }

    /// Books a free consultation; returns the call id.
    pub async fn book(&self, student: &str, coach: &str, start: DateTime<Utc>) -> Uuid {
        let call = self
            .student(student)
            .schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
                student_id: student.to_owned(),
                coach_id: coach.to_owned(),
                start: Some(utc(start)),
                ..Default::default()
            })
            .await
            .expect("booked")
            .into_inner()
            .call
            .expect("call");
        call_id(&call)
    }

    pub async fn cancel(&self, student: &str, call: Uuid) {
        self.student(student)
            .cancel_call(pb::CancelCallRequest {
                call_id: call.to_string(),
                reason: "changed my mind".into(),
                ..Default::default()
            })
            .await
            .expect("cancelled");
    }

    /// Moves the call; returns the new call's id.
    pub async fn reschedule(&self, student: &str, call: Uuid, start: DateTime<Utc>) -> Uuid {
        let moved = self
            .student(student)
            .reschedule_call(pb::RescheduleCallRequest {
                call_id: call.to_string(),
                new_start: Some(utc(start)),
                ..Default::default()
            })
            .await
            .expect("rescheduled")
            .into_inner();
        call_id(&moved.call.expect("new call"))
    }

    pub async fn join(&self, coach: &str, call: Uuid) {
        self.coach(coach)
            .join_call(pb::JoinCallRequest {
                call_id: call.to_string(),
                ..Default::default()
            })
            .await
            .expect("joined");
    }

    /// The call's event types in stream order, from the event store.
    pub async fn events(&self, call: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version")
            .bind(format!("call-{call}"))
            .fetch_all(self.db.pool())
            .await
            .expect("events")
    }

    /// How many events of `event_type` the call has.
    pub async fn count(&self, call: Uuid, event_type: &str) -> usize {
        self.events(call)
            .await
            .iter()
            .filter(|t| *t == event_type)
            .count()
    }

    /// Waits until the call has an event of `event_type`; panics with its
    /// history and timers after `within`.
    pub async fn wait_for_event(&self, call: Uuid, event_type: &str, within: StdDuration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.count(call, event_type).await > 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "call {call}: no {event_type} within {within:?}; events {:?}; timers {:#?}",
                    self.events(call).await,
                    self.timers(call).await
                );
            }
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
    }

    pub async fn timers(&self, call: Uuid) -> Vec<TimerRow> {
        skileez_timers::list_timers(self.db.pool(), call)
            .await
            .expect("timers")
    }

    /// Waits until the call has timers and none of `kinds` is pending.
    pub async fn wait_for_timers(&self, call: Uuid, within: StdDuration) -> Vec<TimerRow> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let timers = self.timers(call).await;
            if !timers.is_empty() {
                return timers;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "call {call}: no timers within {within:?}"
            );
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for (_, token, _) in &self.timers {
            token.cancel();
        }
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn tracing_subscriber_init() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init()
}

pub fn utc(at: DateTime<Utc>) -> pb::StartTime {
    pb::StartTime {
        time: Some(pb::start_time::Time::Utc(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: 0,
        })),
    }
}

pub fn call_id(call: &pb::Call) -> Uuid {
    Uuid::parse_str(&call.card.as_ref().expect("card").call_id).expect("uuid")
}

/// The next whole second at least `ahead` seconds from now.
pub fn seconds_ahead(ahead: i64) -> DateTime<Utc> {
    (Utc::now() + Duration::seconds(ahead) + Duration::milliseconds(999))
        .duration_trunc(Duration::seconds(1))
        .expect("truncate")
}

/// Sleeps until `at` (no-op if it has passed).
pub async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// The timer of `kind` among `timers`.
pub fn timer(timers: &[TimerRow], kind: TimerKind) -> Option<&TimerRow> {
    timers.iter().find(|t| t.kind == kind)
}

pub fn state(timers: &[TimerRow], kind: TimerKind) -> Option<TimerState> {
    timer(timers, kind).map(|t| t.state)
}
